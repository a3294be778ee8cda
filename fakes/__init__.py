"""Local stand-ins of the vendor APIs: they really page, filter and check credentials, with real field names.

One module per vendor, named after the kind it stands in for (``fakes/stripe.py`` for ``stripe``): the
conformance suite finds a pulled kind's fake by that name (``fakes.base.fake_of``). The tests install
them on respx routers, ``fakes.server`` serves them on 127.0.0.1 for a CLI in another process, the demo
and the benches.
"""
