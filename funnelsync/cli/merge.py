"""``funnelsync merge`` and ``funnelsync unmerge``: manual and automatic merges, undo, and the merge log.

Exit codes: 0 done (also when auto-merge finds nothing), 1 the merge could not be done (unknown customer,
nothing to unmerge, database error), 2 the command line is wrong.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from funnelsync.cli import common
from funnelsync.cli.common import app, console, fail, get_engine, print_json

USAGE = 2


def _resolve(conn: Any, ref: str, role: str) -> int:
    from storage.customers import merged_into, resolve_customer

    cid = resolve_customer(conn, ref)
    if cid is None:
        survivor = merged_into(conn, ref.strip()) if ref.strip().startswith("cus_") else None
        if survivor is not None:
            fail(f"{role} customer {ref!r} was merged into {survivor} already: use that uuid")
        hint = " (never existed or deleted)" if ref.startswith("cus_") else ""
        fail(f"{role} customer {ref!r} not found{hint}: use a cus_… uuid or SOURCE:EXTERNAL_ID")
    return cid


@app.command()
def merge(
    from_ref: Annotated[
        str | None, typer.Argument(metavar="FROM", help="The customer merged away: cus_… uuid or SOURCE:EXTERNAL_ID.")
    ] = None,
    into_ref: Annotated[
        str | None, typer.Argument(metavar="INTO", help="The customer that survives: cus_… uuid or SOURCE:EXTERNAL_ID.")
    ] = None,
    auto: Annotated[
        bool, typer.Option("--auto", help="Find duplicate groups and merge each into its survivor.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --auto: list the groups, write nothing.")] = False,
    rule: Annotated[
        list[str] | None,
        typer.Option(
            "--rule", help="With --auto: email, external_id or domain (repeatable; default email + external_id)."
        ),
    ] = None,
    log: Annotated[bool, typer.Option("--log", help="Show the merge log (newest first) instead of merging.")] = False,
    customer: Annotated[
        str | None, typer.Option("--customer", help="With --log: only events of this customer (uuid or SOURCE:ID).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="With --log: at most this many events.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Merge customer FROM into INTO, or find and merge duplicates with --auto (undo: funnelsync unmerge).

    INTO keeps its uuid and values, FROM's fill the gaps, the earliest lead and trial dates win.
    """
    if log:
        if from_ref or into_ref or auto:
            fail("--log takes no FROM/INTO and no --auto", USAGE)
        _show_log(customer, limit, as_json)
        return
    if auto:
        if from_ref or into_ref:
            fail("--auto takes no FROM/INTO: give either FROM INTO or --auto", USAGE)
        _auto(rule, dry_run, as_json)
        return
    if dry_run or rule:
        fail("--dry-run and --rule go with --auto", USAGE)
    if not from_ref or not into_ref:
        fail("give FROM and INTO (cus_… uuid or SOURCE:EXTERNAL_ID), or --auto", USAGE)
    _manual(from_ref, into_ref, as_json)


def _manual(from_ref: str, into_ref: str, as_json: bool) -> None:
    from storage.customers import customer_view
    from storage.merge import MergeError, merge_customers

    engine = get_engine()
    try:
        with engine.begin() as conn:
            from_id = _resolve(conn, from_ref, "FROM")
            into_id = _resolve(conn, into_ref, "INTO")
            if from_id == into_id:
                fail(f"{from_ref!r} and {into_ref!r} are already the same customer")
            event = merge_customers(conn, from_id, into_id, rule="manual", actor="cli")
            (survivor,) = customer_view(conn, [into_id])
    except MergeError as exc:
        fail(str(exc))
    survivor.pop("id", None)
    if as_json:
        print_json({"event": event.as_json(), "customer": survivor})
        return
    console.print(
        f"Merged {event.from_customer_uuid} into {event.into_customer_uuid} (event {event.uuid}); "
        f"undo with: funnelsync unmerge {event.into_customer_uuid} --source-customer SOURCE:EXTERNAL_ID",
        markup=False, highlight=False, soft_wrap=True,
    )


def _auto(rules: list[str] | None, dry_run: bool, as_json: bool) -> None:
    from storage.duplicates import check_rules
    from storage.merge import DEFAULT_RULES, auto_merge

    try:
        wanted = check_rules(rules or DEFAULT_RULES)
    except ValueError as exc:
        fail(str(exc), USAGE)
    engine = get_engine()
    if as_json or dry_run:
        result = auto_merge(engine, wanted, dry_run=dry_run)
    else:
        with common.progress_bar("groups") as bar:
            task = bar.add_task("merging duplicates", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = auto_merge(engine, wanted, dry_run=False, progress=advance)
    if as_json:
        print_json(result.as_json())
        return
    for group in result.groups:
        keys = "; ".join(f"{r}: {', '.join(k)}" for r, k in group.keys.items())
        others = ", ".join(m.uuid for m in group.others)
        console.print(f"{group.survivor.uuid} <- {others}  [{keys}]", markup=False, highlight=False, soft_wrap=True)
    merged = sum(len(g.others) for g in result.groups)
    if dry_run:
        console.print(
            f"Dry run ({', '.join(wanted)}): {len(result.groups)} groups, {merged} customers would be merged "
            f"into their survivor; nothing written.", markup=False, highlight=False,
        )
    else:
        skipped = f", {result.skipped} skipped (changed since detection)" if result.skipped else ""
        console.print(
            f"Merged {result.merged_customers} customers into {len(result.groups)} survivors{skipped} "
            f"(rules {', '.join(wanted)}; detection {result.detection_seconds:.2f} s, merge "
            f"{result.merge_seconds:.2f} s).", markup=False, highlight=False,
        )


def _show_log(customer_ref: str | None, limit: int, as_json: bool) -> None:
    from storage.merge import list_merge_events
    from storage.schema import customers

    engine = get_engine()
    with engine.connect() as conn:
        uuid = None
        if customer_ref:
            if customer_ref.startswith("cus_"):
                uuid = customer_ref  # a merged-away uuid still has its events
            else:
                cid = _resolve(conn, customer_ref, "the")
                uuid = conn.execute(customers.select().where(customers.c.id == cid)).mappings().one()["uuid"]
        events = list_merge_events(conn, uuid, limit)
    if as_json:
        print_json([e.as_json() for e in events])
        return
    table = Table("when", "kind", "from", "into", "rule", "actor", "undone")
    for e in events:
        table.add_row(e.created_at.isoformat(timespec="seconds"), e.kind, e.from_customer_uuid, e.into_customer_uuid,
                      e.rule or "", e.actor, e.undone_at.isoformat(timespec="seconds") if e.undone_at else "")
    console.print(table)


@app.command()
def unmerge(
    customer_ref: Annotated[
        str, typer.Argument(metavar="CUSTOMER", help="The surviving customer: cus_… uuid or SOURCE:EXTERNAL_ID.")
    ],
    source_customer: Annotated[
        str,
        typer.Option("--source-customer", help="SOURCE:EXTERNAL_ID of the record to separate from CUSTOMER."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Undo the merge that brought a source record into CUSTOMER (a merged-away customer comes back as it was).

    A record no merge brought in (another record of its source shares its email) is split off into a new customer.
    """
    from storage.customers import customer_view
    from storage.merge import MergeError
    from storage.schema import customers
    from storage.split import CannotSplit, separate

    if ":" not in source_customer or source_customer.startswith("cus_"):
        fail(f"--source-customer {source_customer!r}: expected SOURCE:EXTERNAL_ID", USAGE)
    engine = get_engine()
    try:
        with engine.begin() as conn:
            into_id = _resolve(conn, customer_ref, "the")
            event = separate(conn, into_id, source_customer, actor="cli")
            restored_id = conn.execute(
                customers.select().where(customers.c.uuid == event.from_customer_uuid)
            ).mappings().one()["id"]
            views = customer_view(conn, [restored_id, into_id])
    except (MergeError, CannotSplit) as exc:
        fail(str(exc))
    for view in views:
        view.pop("id", None)
    if as_json:
        print_json({"event": event.as_json(), "restored": views[0], "customer": views[1]})
        return
    console.print(
        f"Restored {event.from_customer_uuid} (records {', '.join(views[0]['external_ids']) or 'none'}) "
        f"out of {event.into_customer_uuid} (event {event.uuid}).", markup=False, highlight=False, soft_wrap=True,
    )
