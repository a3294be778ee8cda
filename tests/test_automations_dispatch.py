"""Delivering the outbox to a real local receiver on 127.0.0.1 that checks every signature.

Webhook, Slack and set actions; retries within a run and across runs, 410, replay, the time-based
triggers, a dry run, and a ``kill -9`` between delivery and marking. SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from automations.actions import sign
from automations.apply import apply_definitions
from automations.dispatch import replay, run_automations
from automations.rule_file import parse_rule_text
from fakes.hook_receiver import HookReceiver, signature_ok
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from storage.customers import resolve_customer
from storage.edits import manual_edits_of
from storage.outbox import list_deliveries
from storage.schema import customers
from storage.sources import create_source, get_source
from storage.upsert import upsert_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "whsec_test_5d2c"
FAST = (0.05, 0.1)


@pytest.fixture
def receiver(monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    hook = HookReceiver(secret=SECRET).start()
    yield hook
    hook.stop()


def apply(engine, text: str):
    with engine.begin() as conn:
        return apply_definitions(conn, parse_rule_text(text))


def webhook_rule(url: str, *, max_attempts: int = 8, trigger: str = "trial_started", extra: str = "") -> str:
    return f"""
automations:
  - name: hook
    trigger: {trigger}
{extra}    actions:
      - webhook: {{url: "{url}", secret: "env:HOOK_SECRET", max_attempts: {max_attempts}}}
"""


def sync(engine, records):
    with engine.begin() as conn:
        ds = get_source(conn, "stripe") or create_source(conn, "stripe", "stripe")
        return upsert_records(conn, ds.id, records)


def trial_record(ext="t1", start=datetime(2026, 1, 5, tzinfo=UTC), **kw):
    subs = kw.pop("subscriptions", None) or [SubscriptionFact(f"sub_{ext}", "trialing", trial_started_at=start,
                                                              trial_ended_at=start + timedelta(days=14))]
    return SourceCustomerRecord(ext, name=kw.pop("name", "Ada <Lovelace> & Co"), email=f"{ext}@example.com",
                                country="US", free_trial_started_at=start, subscriptions=subs, **kw)


def deliveries(engine, status=None):
    with engine.connect() as conn:
        return list_deliveries(conn, status=status)


def cli(db_url, *args):
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_a_webhook_is_signed_in_the_wire_format_and_delivered_once(db_engine, db_url, receiver):
    apply(db_engine, webhook_rule(receiver.url))
    sync(db_engine, [trial_record()])
    summary = run_automations(db_engine, retry_delays=FAST)
    assert summary.counts() == {"detected": 0, "delivered": 1, "pending": 0, "failed": 0}
    (got,) = receiver.received
    assert got.signature_ok is True
    assert got.headers["content-type"] == "application/json"
    (delivery,) = deliveries(db_engine)
    assert got.headers["idempotency-key"] == delivery.occurrence_id
    assert abs(int(got.headers["x-funnelsync-timestamp"]) - time.time()) < 60
    body = got.json()
    assert set(body) == {"id", "automation", "trigger", "occurred_at", "customer"}
    assert (body["id"], body["automation"], body["trigger"]) == (delivery.occurrence_id, "hook", "trial_started")
    assert body["occurred_at"] == "2026-01-05T00:00:00+00:00"
    # The object `customers show --json` prints, as that command prints it.
    shown = cli(db_url, "customers", "show", "stripe:t1", "--json")
    assert shown.returncode == 0, shown.stderr
    assert body["customer"] == json.loads(shown.stdout)
    assert body["customer"]["manual_edits"] == {} and "id" not in body["customer"]
    assert run_automations(db_engine, retry_delays=FAST).counts()["delivered"] == 0
    sync(db_engine, [trial_record()])
    run_automations(db_engine, retry_delays=FAST)
    assert len(receiver.received) == 1
    assert deliveries(db_engine)[0].status == "delivered"


def test_failing_twice_then_200_is_delivered_once_with_the_same_key_one_and_two_seconds_apart(db_engine, receiver):
    receiver.plan = [500, 503]
    apply(db_engine, webhook_rule(receiver.url))
    sync(db_engine, [trial_record()])
    started = time.monotonic()
    summary = run_automations(db_engine)  # the real waits: 1 s, then 2 s
    took = time.monotonic() - started
    assert summary.delivered == 1
    keys = [r.headers["idempotency-key"] for r in receiver.received]
    assert len(keys) == 3 and len(set(keys)) == 1 and all(r.signature_ok for r in receiver.received)
    assert took >= 3.0
    first, second, third = (r.at for r in receiver.received)
    # 1 s, then 2 s apart (lower bounds, and the second wait the longer: a loaded machine only adds).
    assert second - first >= 0.95 and third - second >= 1.95 and (third - second) - (second - first) >= 0.5
    (delivery,) = deliveries(db_engine)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 3, None)


def test_always_failing_stays_pending_then_fails_and_replay_delivers_it(db_engine, db_url, receiver):
    receiver.default = 500
    apply(db_engine, webhook_rule(receiver.url, max_attempts=5))
    sync(db_engine, [trial_record()])
    first = run_automations(db_engine, retry_delays=FAST)
    assert (first.pending, len(receiver.received)) == (1, 3)
    (delivery,) = deliveries(db_engine)
    # Pending, with its next attempt later: a second run right away tries nothing.
    assert delivery.next_attempt_at > datetime.now(UTC) + timedelta(seconds=30)
    assert run_automations(db_engine, retry_delays=FAST).pending == 0 and len(receiver.received) == 3
    later = run_automations(db_engine, retry_delays=FAST, now=datetime.now(UTC) + timedelta(hours=2))
    assert later.failed == 1 and len(receiver.received) == 5  # 5 attempts in all, then failed
    (delivery,) = deliveries(db_engine, "failed")
    assert delivery.attempts == 5 and delivery.last_error.startswith(f"{receiver.url} answered HTTP 500")
    assert SECRET not in delivery.last_error

    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": ROOT}
    listed = subprocess.run([sys.executable, "-m", "funnelsync", "automations", "deliveries", "--status", "failed",
                             "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert [d["id"] for d in json.loads(listed.stdout)] == [delivery.id], listed.stderr
    receiver.default = 200
    replayed = subprocess.run([sys.executable, "-m", "funnelsync", "automations", "replay", "--failed", "--json"],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert json.loads(replayed.stdout)["delivered"] == 1, replayed.stderr
    assert receiver.received[-1].headers["idempotency-key"] == delivery.occurrence_id
    assert deliveries(db_engine)[0].status == "delivered"
    with pytest.raises(LookupError):
        replay(db_engine, ["occ_nope"])


def test_across_runs_next_attempt_at_grows_to_an_hour_and_replay_by_id_delivers(db_engine, db_url, receiver):
    receiver.default = 503
    apply(db_engine, webhook_rule(receiver.url, max_attempts=12))
    sync(db_engine, [trial_record()])
    waits: list[float] = []
    at = datetime.now(UTC)
    for _ in range(4):  # each run due: 3 tries apiece, 12 in all
        before = datetime.now(UTC)
        run_automations(db_engine, retry_delays=FAST, now=at)
        (delivery,) = deliveries(db_engine)
        waits.append((delivery.next_attempt_at - before).total_seconds())
        at = delivery.next_attempt_at + timedelta(seconds=1)
    assert (delivery.status, delivery.attempts, len(receiver.received)) == ("failed", 12, 12)
    # 4 min after 3 tries, 32 min after 6, then at most an hour (after 9: 256 min, capped).
    assert 235 < waits[0] < 250 and 1915 < waits[1] < 1930 and 3595 < waits[2] < 3610, waits
    assert "503" in delivery.last_error
    receiver.default = 200
    replayed = cli(db_url, "automations", "replay", delivery.id, "--json")
    assert json.loads(replayed.stdout) == {"detected": 0, "delivered": 1, "pending": 0, "failed": 0}, replayed.stderr
    assert receiver.received[-1].headers["idempotency-key"] == delivery.occurrence_id
    assert deliveries(db_engine)[0].status == "delivered"
    unknown = cli(db_url, "automations", "replay", "occ_nope:0")
    assert unknown.returncode != 0 and "no delivery 'occ_nope:0'" in unknown.stderr


def test_410_fails_at_once_and_disables_nothing_and_any_2xx_is_delivered(db_engine, receiver):
    receiver.default = 410
    apply(db_engine, webhook_rule(receiver.url))
    sync(db_engine, [trial_record()])
    assert run_automations(db_engine, retry_delays=FAST).failed == 1
    assert len(receiver.received) == 1
    assert "410" in deliveries(db_engine)[0].last_error
    receiver.default = 202  # the rule still fires: the next occurrence is sent, and a 202 is delivered
    sync(db_engine, [trial_record("t2")])
    assert run_automations(db_engine, retry_delays=FAST).counts() == {"detected": 0, "delivered": 1, "pending": 0,
                                                                      "failed": 0}
    assert len(receiver.received) == 2


def test_a_webhook_url_given_as_a_secret_is_never_in_an_error(db_engine, receiver, monkeypatch):
    secret_url = receiver.url + "?token=hook-token-31f"
    monkeypatch.setenv("HOOK_URL", secret_url)
    receiver.default = 500
    apply(db_engine, webhook_rule("env:HOOK_URL", max_attempts=1))
    sync(db_engine, [trial_record()])
    assert run_automations(db_engine, retry_delays=FAST).failed == 1
    (delivery,) = deliveries(db_engine)
    assert delivery.last_error.startswith("the webhook's URL (from a secret) answered HTTP 500")
    assert "hook-token-31f" not in delivery.last_error and receiver.url not in delivery.last_error
    receiver.stop()  # a network error names no URL either
    assert replay(db_engine, failed=True, retry_delays=FAST).failed == 1
    (delivery,) = deliveries(db_engine)
    assert "hook-token-31f" not in delivery.last_error and "127.0.0.1" not in delivery.last_error, delivery.last_error


def test_slack_and_set_actions_and_set_survives_a_resync(db_engine, receiver, monkeypatch):
    monkeypatch.setenv("SLACK_URL", receiver.url.replace("/hook", "/services/T0/B0/XYZ"))
    apply(db_engine, """
automations:
  - name: team
    trigger: trial_started
    actions:
      - slack: {url: "env:SLACK_URL", text: "Trial started: {{ customer.name }} <{{ customer.email }}>"}
      - set: {owner: "sales@example.com", tag: [trial, hot], "custom.stage": "trial-{{ customer.country }}"}
""")
    sync(db_engine, [trial_record(owner="someone@example.com")])
    summary = run_automations(db_engine, retry_delays=FAST)
    assert summary.delivered == 2, [d.last_error for d in deliveries(db_engine)]
    (slack,) = receiver.received
    assert slack.path == "/services/T0/B0/XYZ"
    assert slack.json() == {"text": "Trial started: Ada &lt;Lovelace&gt; &amp; Co <t1@example.com>"}
    with db_engine.connect() as conn:
        cid = resolve_customer(conn, "stripe:t1")
        assert manual_edits_of(conn, cid) == {"owner": "sales@example.com", "tag.trial": True, "tag.hot": True,
                                              "custom.stage": "trial-US"}
    sync(db_engine, [trial_record(owner="other@example.com", tags=["from-source"])])  # a re-sync
    with db_engine.connect() as conn:
        row = conn.execute(select(customers.c.owner, customers.c.tags, customers.c.custom)
                           .where(customers.c.id == cid)).one()
    assert row.owner == "sales@example.com"
    assert set(row.tags) == {"from-source", "trial", "hot"} and row.custom["stage"] == "trial-US"


def test_time_triggers_fire_once_when_their_moment_comes(db_engine, receiver):
    apply(db_engine, f"""
automations:
  - name: ending
    trigger: trial_ending
    days_before: 3
    actions: [{{webhook: {{url: "{receiver.url}", secret: "env:HOOK_SECRET"}}}}]
  - name: expired
    trigger: trial_expired
    days_after: 30
    actions: [{{webhook: {{url: "{receiver.url}", secret: "env:HOOK_SECRET"}}}}]
""")
    now = datetime.now(UTC)
    start = now - timedelta(days=28)
    sync(db_engine, [
        trial_record("ends-soon", start, subscriptions=[SubscriptionFact("s1", "trialing", trial_started_at=start,
                                                                         trial_ended_at=now + timedelta(days=5))]),
        trial_record("converted", start, subscriptions=[SubscriptionFact("s2", "active", trial_started_at=start,
                                                                         first_paid_at=start + timedelta(days=10))]),
    ])
    assert run_automations(db_engine, retry_delays=FAST).counts() == {"detected": 0, "delivered": 0, "pending": 0,
                                                                      "failed": 0}
    later = now + timedelta(days=3)  # 2 days before the trial end, 31 days after the start
    first = run_automations(db_engine, retry_delays=FAST, now=later)
    assert (first.detected, first.delivered) == (2, 2)
    fired = sorted((r.json()["automation"], r.json()["customer"]["external_ids"][0]) for r in receiver.received)
    assert fired == [("ending", "ends-soon"), ("expired", "ends-soon")]
    again = run_automations(db_engine, retry_delays=FAST, now=later + timedelta(hours=1))
    assert (again.detected, again.delivered, len(receiver.received)) == (0, 0, 2)


def test_a_dry_run_lists_and_sends_nothing_and_run_prints_its_counts(db_engine, db_url, receiver):
    apply(db_engine, webhook_rule(receiver.url))
    sync(db_engine, [trial_record()])
    dry = run_automations(db_engine, dry_run=True)
    assert [d["automation"] for d in dry.would_deliver] == ["hook"] and receiver.received == []
    assert deliveries(db_engine)[0].status == "pending" and deliveries(db_engine)[0].attempts == 0
    listed = cli(db_url, "automations", "run", "--dry-run", "--json")
    shown = json.loads(listed.stdout)
    assert {k: shown[k] for k in ("detected", "delivered", "pending", "failed")} == {
        "detected": 0, "delivered": 0, "pending": 1, "failed": 0}, listed.stderr
    assert [(d["automation"], d["kind"], d["status"]) for d in shown["would_deliver"]] == [
        ("hook", "webhook", "pending")]
    assert receiver.received == [] and deliveries(db_engine)[0].attempts == 0
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": ROOT}
    ran = subprocess.run([sys.executable, "-m", "funnelsync", "automations", "run", "--json"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    assert json.loads(ran.stdout) == {"detected": 0, "delivered": 1, "pending": 0, "failed": 0}, ran.stderr
    assert receiver.received[0].signature_ok is True


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_and_a_changed_body_fails_it():
    body = b'{"id":"occ_1"}'
    expected = "v1=" + hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, body) == expected
    headers = {"x-funnelsync-timestamp": "1700000000", "x-funnelsync-signature": expected}
    assert signature_ok(SECRET, headers, body)
    assert not signature_ok(SECRET, headers, body + b" ")
    assert not signature_ok(SECRET, {**headers, "x-funnelsync-timestamp": "1700000001"}, body)


def test_kill_9_between_delivery_and_marking_delivers_again_with_the_same_key(db_engine, db_url, receiver):
    apply(db_engine, webhook_rule(receiver.url))
    sync(db_engine, [trial_record()])
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": ROOT}
    pids: list[int] = []
    # The receiver has the delivery; the sender dies before it can mark it delivered.
    receiver.on_request = lambda _item: os.kill(pids[0], signal.SIGKILL) if receiver.count == 1 else None
    process = subprocess.Popen([sys.executable, "-m", "funnelsync", "automations", "run"], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids.append(process.pid)
    assert process.wait(timeout=120) == -signal.SIGKILL
    assert len(receiver.received) == 1 and deliveries(db_engine)[0].status == "pending"
    assert run_automations(db_engine, retry_delays=FAST).delivered == 1
    keys = [r.headers["idempotency-key"] for r in receiver.received]
    assert len(keys) == 2 and keys[0] == keys[1] == deliveries(db_engine)[0].occurrence_id


def _docs_receiver(port: int) -> str:
    """The ten-line receiver of docs/automations.md, listening on ``port``."""
    text = open(os.path.join(ROOT, "docs", "automations.md"), encoding="utf-8").read()
    code = text.split("A receiver that checks the signature")[1].split("```python\n")[1].split("```")[0]
    assert len([line for line in code.splitlines() if line.strip()]) <= 10  # the issue asks for ten lines
    return code.replace("8787", str(port))


def test_the_receiver_of_the_docs_accepts_our_signature_and_refuses_another(db_engine, monkeypatch, tmp_path):
    import socket

    monkeypatch.setenv("HOOK_SECRET", SECRET)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "receiver.py"
    script.write_text(_docs_receiver(port), encoding="utf-8")
    apply(db_engine, webhook_rule(f"http://127.0.0.1:{port}/hook", max_attempts=3))
    sync(db_engine, [trial_record()])
    for secret, outcome in (("not-the-secret", "failed"), (SECRET, "delivered")):
        server = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "HOOK_SECRET": secret},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until it listens
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.1)
            if outcome == "failed":
                run_automations(db_engine, retry_delays=FAST)
                (delivery,) = deliveries(db_engine)
                assert delivery.status == "failed" and "answered HTTP 401" in delivery.last_error
            else:
                assert replay(db_engine, failed=True, retry_delays=FAST).delivered == 1
        finally:
            server.kill()
            server.wait()


def _listening(port: int) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def test_the_worked_example_of_the_docs_runs_as_written(db_url, tmp_path):
    """docs/automations.md's worked example: its rule file, its commands and their output, with its own
    receiver checking every signature."""
    import socket

    text = open(os.path.join(ROOT, "docs", "automations.md"), encoding="utf-8").read()
    example = text.split("## A worked example")[1].split("## A rule file")[0]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rules = tmp_path / "rules.yaml"
    rules.write_text(example.split("```yaml\n")[1].split("```")[0].replace("8787", str(port)), encoding="utf-8")
    script = tmp_path / "receiver.py"
    script.write_text(_docs_receiver(port), encoding="utf-8")
    day = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    trials = tmp_path / "trials.csv"
    trials.write_text("id,name,email,country,lead created at,free trial started at\n"
                      + "".join(f"{i},P{i},p{i}@example.com,{c},{day},{day}\n"
                                for i, c in enumerate(("US", "US", "DE", "US", "FR"), start=1)), encoding="utf-8")
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": ROOT, "HOOK_SECRET": SECRET,
           "FUNNELSYNC_HOME": str(tmp_path / "home"), "COLUMNS": "200"}

    def funnelsync(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    server = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        _listening(port)
        applied = "2 created, 0 updated, 0 unchanged, 0 removed."
        assert applied in example and funnelsync("automations", "apply", "rules.yaml").strip() == applied
        for delivered in (3, 0):  # the same file again: nothing
            funnelsync("import", "csv", "trials.csv", "--source", "Website")
            counts = {"detected": 0, "delivered": delivered, "pending": 0, "failed": 0}
            assert json.dumps(counts) in example
            assert json.loads(funnelsync("automations", "run", "--json")) == counts
    finally:
        server.kill()
        server.wait()


def test_duplicate_found_fires_once_per_group_and_its_merge_action_merges_it_undoably(db_engine, receiver):
    from storage.merge import auto_merge, list_merge_events

    apply(db_engine, f"""
automations:
  - name: dupes
    trigger: duplicate_found
    actions:
      - merge: duplicate
      - webhook: {{url: "{receiver.url}", secret: "env:HOOK_SECRET"}}
""")
    with db_engine.begin() as conn:
        crm = create_source(conn, "crm", "hubspot")
        upsert_records(conn, crm.id, [SourceCustomerRecord("h-1", name="Jo", email="jo@example.com")])
    sync(db_engine, [SourceCustomerRecord("s-1", name="Jo B", email="Jo@Example.com")])
    auto_merge(db_engine, dry_run=True)  # a dry run lists and fires nothing
    assert deliveries(db_engine) == []
    auto_merge(db_engine)
    with db_engine.connect() as conn:
        events = list_merge_events(conn)
        assert [e.actor for e in events] == ["automation:dupes"]
        survivor = resolve_customer(conn, "crm:h-1")
        assert resolve_customer(conn, "stripe:s-1") == survivor
    merge_delivery, hook_delivery = sorted(deliveries(db_engine), key=lambda d: d.action_index)
    assert (merge_delivery.kind, merge_delivery.status) == ("merge", "delivered")
    assert run_automations(db_engine, retry_delays=FAST).delivered == 1
    (got,) = receiver.received
    assert got.json()["trigger"] == "duplicate_found" and sorted(got.json()["customer"]["external_ids"]) == [
        "h-1", "s-1"]
    auto_merge(db_engine)  # nothing new is found, nothing fires
    assert len(deliveries(db_engine)) == 2
    from storage.merge import unmerge

    with db_engine.begin() as conn:  # the automation's merge is undone like any
        unmerge(conn, survivor, "stripe:s-1")
    with db_engine.connect() as conn:
        assert resolve_customer(conn, "stripe:s-1") != survivor
        assert [e.kind for e in list_merge_events(conn)][:1] == ["unmerge"]
    assert len(deliveries(db_engine)) == 2  # and the unmerge fires nothing


def test_a_delivery_pending_for_a_merged_away_customer_is_delivered_about_its_survivor(db_engine, receiver):
    from storage.merge import merge_customers

    apply(db_engine, webhook_rule(receiver.url))
    with db_engine.begin() as conn:
        crm = create_source(conn, "crm", "hubspot")
        upsert_records(conn, crm.id, [SourceCustomerRecord("h-9", name="Ada", email="ada@example.com")])
    sync(db_engine, [trial_record("t9")])  # its trial fired; the delivery waits for a run
    with db_engine.begin() as conn:
        survivor, gone = resolve_customer(conn, "crm:h-9"), resolve_customer(conn, "stripe:t9")
        merge_customers(conn, gone, survivor)
        survivor_uuid = conn.execute(select(customers.c.uuid).where(customers.c.id == survivor)).scalar_one()
    assert run_automations(db_engine, retry_delays=FAST).delivered == 1
    (got,) = receiver.received
    assert got.json()["customer"]["uuid"] == survivor_uuid
    assert sorted(got.json()["customer"]["external_ids"]) == ["h-9", "t9"]


def test_two_runs_at_once_deliver_each_delivery_once(db_engine, receiver):
    """The scheduled run-automations and one chained after a sync may overlap: each delivery is still
    sent once (the second run leaves the dispatching to the first)."""
    import threading

    apply(db_engine, webhook_rule(receiver.url))
    sync(db_engine, [trial_record(f"c{i}") for i in range(6)])
    receiver.on_request = lambda _item: time.sleep(0.3)  # a slow receiver: the runs overlap
    results = []
    runs = [threading.Thread(target=lambda: results.append(run_automations(db_engine, retry_delays=FAST)))
            for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=120)
    keys = [r.headers["idempotency-key"] for r in receiver.received]
    assert len(keys) == 6 and len(set(keys)) == 6
    assert sorted(r.delivered for r in results) == [0, 6]
    assert {d.status for d in deliveries(db_engine)} == {"delivered"}


def test_a_network_error_is_retried_and_the_delivery_stays_pending(db_engine, receiver):
    apply(db_engine, webhook_rule(receiver.url))
    sync(db_engine, [trial_record()])
    receiver.stop()  # nothing listens: connection refused
    summary = run_automations(db_engine, retry_delays=FAST)
    assert (summary.pending, summary.failed) == (1, 0)
    (delivery,) = deliveries(db_engine)
    assert (delivery.status, delivery.attempts) == ("pending", 3) and "ConnectError" in delivery.last_error
