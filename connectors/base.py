"""What a source kind declares, and the connector protocol: settings, streams, batches.

Every kind of data source is one class (``connectors.registry`` lists them): a ``SourceKind`` says its
``kind``, its ``title``, how it is fed (``feeds``: pulled on a schedule, pushed to a webhook, imported
from files, written through the API) and, when it has one, its ``settings_schema``.

A connector is the kind of a pulled source, mostly declaration (after the Singer SDK): its
``settings_schema`` (which keys exist, which are secrets, the production ``base_url``) and its
``streams`` (name, key, cursor field, and the method that reads it). Reading a stream yields ``Batch``
objects: the records of one API page (or a few) and the cursor reached AFTER them. The sync engine
commits each batch together with its cursor, so a sync killed anywhere resumes from the last committed
batch and loses nothing.

Connectors never touch the database or Prefect: they take plain settings and return records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, ClassVar, Self

import httpx

from connectors.http import ApiError, ConnectorError, HttpClient, RequestPacer
from connectors.paging import Page, PageRequest, Paginator, fetch_pages, fetch_slices
from funnelsync.records import SourceCustomerDeletion, SourceCustomerRecord

DEFAULT_BATCH_SIZE = 500
# Slices a full read is cut into per worker: slices of one size in time hold unequal numbers of records,
# and a worker done early takes the next slice instead of idling.
SLICES_PER_WORKER = 4

# What mapping one page returns: its records (and ``SourceCustomerDeletion``s for customers the source
# deleted) and the highest cursor-field value on the page.
PageMapper = Callable[[list[Any]], tuple[list[Any], Any]]


class SettingsError(ConnectorError):
    """Settings missing, unknown or malformed for a connector kind."""


@dataclass(frozen=True)
class Setting:
    """One setting of a connector kind.

    Attributes:
        name: the key given with ``--set name=value``.
        secret: True for credentials: stored as a reference (``env:VAR``, ``prefect-secret:BLOCK`` or
            ``local-secret:…``), resolved at run time, never printed.
        required: a sync cannot start without it.
        default: the value when absent (``base_url`` defaults to the vendor's production URL).
        help: one line for ``sources add --help`` and the docs.
        cast: converts a value given as text on the command line (``int`` for page sizes).
        choices: the allowed values, when there are few.
    """

    name: str
    secret: bool = False
    required: bool = False
    default: Any = None
    help: str = ""
    cast: Callable[[Any], Any] | None = None
    choices: tuple[str, ...] = ()


def positive_number(value: Any) -> float:
    """A setting's number that must be above zero (a request rate)."""
    number = float(value)
    if not number > 0:
        raise ValueError(value)
    return number


# Settings every pull connector takes, whatever its API (appended to each connector's schema).
COMMON_SETTINGS = (
    Setting("max_requests_per_second", cast=positive_number,
            help="the most requests a second this source sends, over all its concurrent requests (default: no limit)"),
)


@dataclass(frozen=True)
class Slicing:
    """How a full read of a list splits into disjoint slices that are paged at once (``Connector.read_list``).

    Attributes:
        split: given how many slices are wanted, small JSON-ready dicts that together cover the whole
            list, each record in exactly one (``{"created_from": 1700000000, "created_before": 1700086400}``);
            an empty list when the list is empty. Called once per full read, its answer kept in the cursor.
        request: the first request of one slice.
        encode: a moment as a value of the list's cursor field (epoch seconds for Chargebee): the next
            run reads from when the sliced read began (see ``_read_sliced``).
    """

    split: Callable[[int], list[dict[str, Any]]]
    request: Callable[[dict[str, Any]], PageRequest]
    encode: Callable[[datetime], Any]


@dataclass(frozen=True)
class Stream:
    """A stream a connector reads: its name, the record key, its cursor field and its reader method."""

    name: str
    key: str
    cursor_field: str | None
    reader: str


@dataclass
class Batch:
    """Records of one page (or a few) and the state reached after them.

    Attributes:
        stream: the stream name.
        records: the records to upsert; a record with ``subscriptions=None`` leaves stored ones alone.
        cursor: the stream state after this batch (a small dict, never a list of ids); committed in
            the same transaction as the records.
        fetched: how many source objects the batch read (may exceed ``len(records)`` when objects are
            filtered out or several objects make one record).
        deleted: the external ids of customers the source says were deleted, removed after the
            records are written (a deletion outranks an older copy read in the same batch).
    """

    stream: str
    records: list[SourceCustomerRecord]
    cursor: dict[str, Any]
    fetched: int
    deleted: list[str] = field(default_factory=list)


class Feed(Enum):
    """How records reach a source of some kind (a kind may be fed several ways)."""

    PULLED = "pulled"  # read on a schedule: ``funnelsync sync``, the sync-all flow
    PUSHED = "pushed"  # deliveries to ``POST /webhooks/NAME`` (``connectors.push.WebhookReceiver``)
    FILE = "file"  # file and sheet imports: flexible or structured CSV, a Google Sheet
    API = "api"  # customers written through the HTTP API (and by hand)


class SourceKind:
    """What a kind of data source declares; ``connectors.registry`` lists one class per kind.

    Attributes:
        kind: the name a source is created with (``--kind``).
        title: the integration's name for people.
        feeds: how its records arrive.
        settings_schema: the settings the kind accepts, checked when a source is added; None when its
            settings are free-form (their secrets are then recognised by name).
        system_name: what the commercial product's API calls the kind (``billing-system-type``), when it
            is not the title.
    """

    kind: ClassVar[str]
    title: ClassVar[str]
    feeds: ClassVar[frozenset[Feed]]
    settings_schema: ClassVar[tuple[Setting, ...] | None] = None
    system_name: ClassVar[str | None] = None

    @classmethod
    def pulls(cls, settings: Mapping[str, Any]) -> bool:
        """Whether a source of this pulled kind with these settings is read on a schedule (a kind may
        also be fed by pushes alone, when the settings name nothing to pull from)."""
        return Feed.PULLED in cls.feeds


class Connector(SourceKind):
    """Base of every pull connector: settings, an HTTP client, and a ``read`` per stream.

    Subclasses declare ``kind``, ``settings_schema`` and ``streams`` and implement one reader method
    per stream, ``(state: dict, full_refresh: bool) -> Iterator[Batch]``, plus ``make_client``.
    """

    feeds: ClassVar[frozenset[Feed]] = frozenset({Feed.PULLED})
    settings_schema: ClassVar[tuple[Setting, ...]]
    streams: ClassVar[tuple[Stream, ...]]
    # The largest page the API serves, for connectors with a ``page_size`` setting.
    max_page_size: ClassVar[int] = 100
    # True for an API that cannot list what changed since a moment: the sync then hands the connector,
    # before it reads, the subscriptions stored as not ended (``known_subscriptions``: id → state).
    reconciles_subscriptions: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("settings_schema")
        if declared is not None:
            names = {s.name for s in declared}
            cls.settings_schema = (*declared, *(s for s in COMMON_SETTINGS if s.name not in names))

    def __init__(
        self,
        settings: Mapping[str, Any],
        *,
        source_name: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep_fn: Callable[[float], None] | None = None,
        now: Callable[[], datetime] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.settings = validate_settings(type(self), settings)
        self.batch_size = max(1, batch_size)
        self.source_name = source_name or self.kind
        self.transport = transport
        self.sleep_fn = sleep_fn
        self._now = now or (lambda: datetime.now(UTC))
        # The moment this run started: a change stream reading from here misses nothing written
        # while a full read of the main stream was under way. ``read_list`` moves it back to when an
        # interrupted full read began, when it resumes one (see ``backfill_started`` there).
        self.started_at = self._now()
        self.known_subscriptions: dict[str, str] = {}
        self._client: HttpClient | None = None
        rate = self.settings.get("max_requests_per_second")
        # One pace for the source, whichever of its clients (Braintree has two) and threads send.
        self.pacer = RequestPacer(rate) if rate else None

    @property
    def client(self) -> HttpClient:
        """The HTTP client, created on first use."""
        if self._client is None:
            self._client = self.make_client()
        return self._client

    def make_client(self) -> HttpClient:
        """The source's HTTP client: ``base_url`` with what ``client_options`` adds."""
        return self.http_client(str(self.settings["base_url"]), **self.client_options())

    def client_options(self) -> dict[str, Any]:
        """The API's auth, headers and credentials hint: keyword arguments of ``HttpClient``."""
        return {}

    def http_client(self, base_url: str, **options: Any) -> HttpClient:
        """An ``HttpClient`` of this source: named after it in errors, with the transport and sleep given."""
        return HttpClient(self.source_name, base_url, sleep_fn=self.sleep_fn, transport=self.transport,
                          pacer=self.pacer, **options)

    @property
    def concurrency(self) -> int:
        """Requests in flight at once: the ``concurrency`` setting of a connector that declares one, else 1."""
        return max(1, int(self.settings.get("concurrency") or 1))

    @property
    def page_size(self) -> int:
        """The ``page_size`` setting, within 1 and the API's largest page (``max_page_size``)."""
        return max(1, min(self.max_page_size, int(self.settings["page_size"])))

    def close(self) -> None:
        """Release the HTTP connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def forget_clients(self) -> None:
        """Drop the HTTP clients unclosed, so the next request opens connections of its own: in a forked
        child, whose inherited pool shares its sockets with the parent."""
        self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def stream(cls, name: str) -> Stream:
        """The declared stream called ``name``."""
        for stream in cls.streams:
            if stream.name == name:
                return stream
        raise SettingsError(
            f"{cls.kind} has no stream {name!r}; streams: {', '.join(s.name for s in cls.streams)}"
        )

    def read(
        self, stream: str, stream_state: Mapping[str, Any] | None, full_refresh: bool
    ) -> Iterator[Batch]:
        """Yield the batches of ``stream`` from ``stream_state`` (ignored on a full refresh).

        Args:
            stream: a declared stream name.
            stream_state: the cursor committed with the last batch of an earlier run, or None.
            full_refresh: read everything, ignoring the saved cursor.
        """
        declared = self.stream(stream)
        reader = getattr(self, declared.reader)
        state = {} if full_refresh or not stream_state else dict(stream_state)
        return reader(state, full_refresh)

    def read_list(
        self,
        stream: str,
        state: Mapping[str, Any],
        build_request: Callable[[Any], PageRequest],
        paginator: Paginator,
        map_page: PageMapper,
        caught_up: Any = None,
        slicing: Slicing | None = None,
    ) -> Iterator[Batch]:
        """Read a filtered, paged list resumably; the reader behind most streams.

        The state has three keys: ``since`` (the lower bound this run filters on, None on a first
        sync), ``page_token`` (where an interrupted run resumes, within the same ``since``) and
        ``watermark`` (the highest cursor-field value seen). When the list is exhausted the state
        becomes ``{"since": watermark, "watermark": watermark}`` for the next incremental run. The
        watermark never goes back, whatever order the API lists in (Stripe lists newest first).

        Args:
            stream: the stream name for the batches.
            state: the committed cursor (empty on a first sync or a full refresh).
            build_request: the first request of a run, given ``since``.
            paginator: the API's pagination style.
            map_page: maps a page's items to records and returns the page's highest cursor value.
            caught_up: for a change stream listing everything since a moment, the cursor value a fully
                read list has caught up to (the run's start less a lookback): the next run starts there
                when no item came later, so a quiet source's cursor keeps up with the clock.
            slicing: for a list that a filter splits into disjoint parts, how; a full read with
                ``concurrency`` above 1 then pages ``concurrency`` slices at once (``_read_sliced``).
        """
        since = state.get("since")
        watermark = state.get("watermark", since)
        # A full read (no ``since``) records when it began; a run resuming it moves ``started_at``
        # back there, so the change streams that start after it cover changes made while the first,
        # interrupted run was reading pages it had already passed.
        extra: dict[str, Any] = {}
        if since is None:
            resuming = state.get("page_token") or state.get("slices")
            backfill_started = state.get("backfill_started") if resuming else None
            backfill_started = backfill_started or self.started_at.isoformat()
            resumed_from = datetime.fromisoformat(backfill_started)
            self.started_at = min(self.started_at, resumed_from)
            extra["backfill_started"] = backfill_started

        def mapped(items: list[Any]) -> tuple[list[Any], Any]:
            try:
                return map_page(items)
            except (KeyError, TypeError, AttributeError) as exc:
                # An item without a field every record needs (its id) or of the wrong shape: the page is
                # refused whole, before anything of it is written, in one line rather than a traceback.
                what = f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else str(exc)
                raise ApiError(f"{self.source_name}: {stream}: the API listed a record that cannot be read "
                               f"({what}); nothing of that page was written") from None

        # A sequential read interrupted mid-list resumes sequentially: its page token is the whole list's.
        sliced = since is None and slicing is not None and not state.get("page_token")
        if sliced and (state.get("slices") or self.concurrency > 1):
            yield from self._read_sliced(stream, state, slicing, paginator, mapped, watermark, extra)  # type: ignore[arg-type]
            return

        def records_of(items: list[Any]) -> list[Any]:
            nonlocal watermark
            records, page_max = mapped(items)
            if page_max is not None and (watermark is None or page_max > watermark):
                watermark = page_max
            return records

        pages = fetch_pages(self.client, build_request(since), paginator, start_token=state.get("page_token"))

        def cursor_of(page: Page) -> dict[str, Any]:
            if page.next_token is None and caught_up is not None and (watermark is None or caught_up > watermark):
                return {"since": caught_up, "watermark": caught_up}
            return self.cursor_after(page, since, watermark, **extra)

        yield from self.read_pages(stream, pages, records_of, cursor_of)

    def _read_sliced(
        self,
        stream: str,
        state: Mapping[str, Any],
        slicing: Slicing,
        paginator: Paginator,
        mapped: Callable[[list[Any]], tuple[list[Any], Any]],
        watermark: Any,
        extra: dict[str, Any],
    ) -> Iterator[Batch]:
        """A full read of a sliced list, ``concurrency`` slices paged at once, resumable slice by slice.

        The cursor of a batch lists every slice with the token of its next page not yet in a committed
        batch (``page_token``) or ``done``: it is taken when the batch is cut, from the pages in that
        batch and before it, so it never points past a page that is not written. A run resuming it skips
        the done slices and carries on the others where they stopped.

        Once every slice is done the next run reads from when this read began (``started_at``, moved
        back to an interrupted first run's start), not from the watermark: a slice is not sorted by the
        cursor field, so a customer changed after its slice was read can be older than a change read
        later in another slice; reading from the start again catches it (what it reads twice is
        unchanged and written no second time). The watermark is kept as after a sequential read.
        """
        parts = [dict(part) for part in state.get("slices") or []]
        if not parts:
            parts = [{"slice": part, "page_token": None, "done": False}
                     for part in slicing.split(self.concurrency * SLICES_PER_WORKER)]
        open_parts = [part for part in parts if not part["done"]]
        requests = [(slicing.request(part["slice"]), part["page_token"]) for part in open_parts]

        def cursor() -> dict[str, Any]:
            if all(part["done"] for part in parts):
                began = slicing.encode(self.started_at)
                since = None if watermark is None else min(watermark, began)
                return {"since": since, "watermark": watermark}
            return {"since": None, "slices": [dict(part) for part in parts], "watermark": watermark, **extra}

        buffer = ChunkBuffer(self.batch_size)
        pending = False
        for index, page, (records, page_max) in fetch_slices(
            self.client, requests, paginator, mapped, workers=self.concurrency
        ):
            part = open_parts[index]
            part["page_token"], part["done"] = page.next_token, page.next_token is None
            if page_max is not None and (watermark is None or page_max > watermark):
                watermark = page_max
            pending = True
            if buffer.add(records, len(page.items)):
                yield buffer.flush(stream, cursor())
                pending = False
        if pending or not open_parts:
            yield buffer.flush(stream, cursor())

    def read_pages(
        self,
        stream: str,
        pages: Iterable[Page],
        records_of: Callable[[list[Any]], Sequence[Any]],
        cursor_of: Callable[[Page], dict[str, Any]],
    ) -> Iterator[Batch]:
        """The resumable read loop every paged stream shares: pages mapped to records, buffered into batches.

        Pages are buffered up to ``batch_size`` records so transactions stay coarse; the cursor of a
        batch is the one reached after its last page (``cursor_of`` that page, called after
        ``records_of`` it), so a run killed between batches resumes after the last one committed.
        """
        buffer = ChunkBuffer(self.batch_size)
        cursor: dict[str, Any] = {}
        pending = False
        for page in pages:
            records = records_of(page.items)
            cursor = cursor_of(page)
            pending = True
            if buffer.add(records, len(page.items)):
                yield buffer.flush(stream, cursor)
                pending = False
        if pending:
            yield buffer.flush(stream, cursor)

    @staticmethod
    def cursor_after(page: Page, since: Any, watermark: Any, **extra: Any) -> dict[str, Any]:
        """The state after ``page`` of a list read from ``since``: mid-list, where to resume (with ``extra``);
        after the last page, the watermark is where the next incremental run starts."""
        if page.next_token is None:
            return {"since": watermark, "watermark": watermark}
        return {"since": since, "page_token": page.next_token, "watermark": watermark, **extra}

    def changes_from(
        self, state: Mapping[str, Any], lookback: timedelta, encode: Callable[[datetime], Any]
    ) -> dict[str, Any]:
        """The state a change stream reads from: as committed, or, on a first run or a full refresh (no
        ``since``), the changes since this run began, ``lookback`` earlier for clock skew (the main
        stream read everything up to now). ``encode`` turns the moment into the API's cursor value."""
        if state.get("since") is not None:
            return dict(state)
        start = encode(self.started_at - lookback)
        return {"since": start, "watermark": start}


def map_concurrently(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    """``[fn(item) for item in items]`` with up to ``workers`` requests in flight, order kept.

    APIs without a multi-id filter (Stripe, Recurly) need a request or two per customer; against a
    real API latency dominates, and a few requests in flight multiply throughput.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def validate_settings(connector: type[SourceKind], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``settings`` against the kind's schema and fill defaults.

    Raises:
        SettingsError: naming every missing required key and every unknown key.
    """
    known = {s.name: s for s in connector.settings_schema or ()}
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise SettingsError(
            f"{connector.kind}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    resolved: dict[str, Any] = {}
    missing = []
    for name, spec in known.items():
        value = settings.get(name)
        if value in (None, ""):
            value = spec.default
        if spec.required and value in (None, ""):
            missing.append(name)
        if value is not None and spec.cast is not None:
            try:
                value = spec.cast(value)
            except (TypeError, ValueError):
                raise SettingsError(
                    f"{connector.kind}: setting {name}={value!r} is not a valid {spec.cast.__name__}"
                ) from None
        if value is not None and spec.choices and value not in spec.choices:
            raise SettingsError(
                f"{connector.kind}: setting {name}={value!r}: expected one of {', '.join(spec.choices)}"
            )
        resolved[name] = value
    if missing:
        raise SettingsError(
            f"{connector.kind}: missing required setting(s) {', '.join(missing)} (--set KEY=VALUE)"
        )
    return resolved


def secret_names(connector: type[SourceKind]) -> set[str]:
    """The names of the settings that hold credentials."""
    return {s.name for s in connector.settings_schema or () if s.secret}


@dataclass
class ChunkBuffer:
    """Collects mapped records and flushes them as batches of at least ``size`` records.

    A page of a few records (Stripe events) would otherwise make one transaction each; buffering keeps
    transactions coarse. ``fetched`` counts the source objects read into the buffer.
    """

    size: int
    records: list[SourceCustomerRecord] = field(default_factory=list)
    fetched: int = 0
    deleted: list[str] = field(default_factory=list)

    def add(self, records: Sequence[SourceCustomerRecord | SourceCustomerDeletion], fetched: int) -> bool:
        """Add a page's records (and deletions); True when the buffer is full enough to flush."""
        for record in records:
            if isinstance(record, SourceCustomerDeletion):
                self.deleted.append(record.external_id)
            else:
                self.records.append(record)
        self.fetched += fetched
        return len(self.records) + len(self.deleted) >= self.size

    def flush(self, stream: str, cursor: dict[str, Any]) -> Batch:
        """Return the buffered batch with ``cursor`` and empty the buffer."""
        batch = Batch(stream, self.records, dict(cursor), self.fetched, list(dict.fromkeys(self.deleted)))
        self.records, self.fetched, self.deleted = [], 0, []
        return batch
