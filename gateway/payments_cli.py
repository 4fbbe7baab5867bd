"""`python run.py payments …`: the operator's view from a terminal, read from DATABASE_URL's database
directly, SQLite or PostgreSQL (the gateway need not be running; if it is, this reads what it has
committed). Nothing is created or migrated: a database not at the latest schema is refused (run
`python run.py migrate`).

    list      payments: -q phone/receipt/reference/id, --status, --from/--to (Nairobi days)
    totals    totals per Nairobi day of the same payments
    show ID   one payment (CheckoutRequestID or receipt), order (ord_…) or webhook event (evt_…)
    orders    orders: -q reference/id/phone/receipt, --status open|paid, --from/--to
    unmatched callbacks that matched nothing (unknown) or could not be verified (unverified)
    lost      pushes whose answer from Daraja was lost
    late      late successes (completed after the gateway had given up on them)
    doubles   orders paid more than once
    webhooks  the webhook outbox: --state pending|delivered|failed, -q an id
    resend ID send a webhook event again (a running gateway sends it within a second)
    export    payments as CSV (the same filters as list), to stdout or -o FILE

Every listing takes --json for one JSON document instead of a table. Exit status: 0 done, 1 not
found, 2 bad arguments or no database.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TextIO

import asyncpg

from . import reports
from .config import is_postgresql, sqlite_path
from .doctor import PG_ERRORS, DatabaseProblem, database_url, hide_password, read_schema
from .storage import SqliteTransactionStore, TransactionStore
from .storage_pg import PostgresTransactionStore

Command = Callable[[TransactionStore, argparse.Namespace, TextIO], Coroutine[Any, Any, int]]


class Usage(Exception):
    """A bad argument or a missing database: exit status 2, with this message."""


class _PostgresReader(PostgresTransactionStore):
    """The PostgreSQL store, opened without migrating (its schema is checked before, by `run`)."""

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)


async def open_database(url: str) -> TransactionStore:
    """DATABASE_URL's store, opened, if its database exists at the latest schema (Usage if not):
    nothing is created or migrated by looking."""
    try:
        problem = (await read_schema(url)).problem()
    except DatabaseProblem as exc:
        raise Usage(str(exc)) from None
    if problem is not None:
        raise Usage(f"{hide_password(url)}: {problem}")
    store: TransactionStore = (_PostgresReader(url) if is_postgresql(url)
                               else SqliteTransactionStore(sqlite_path(url)))
    await store.open()  # SQLite: its migration step finds nothing to do (the schema is the latest)
    return store


# -- output --------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for extra in ("message", "double_paid", "money_taken"):
            if hasattr(type(value), extra):
                data[extra] = getattr(value, extra)
        return data
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_json(out: TextIO, value: Any) -> None:
    out.write(json.dumps(_plain(value), indent=2, ensure_ascii=False, default=str) + "\n")


def write_table(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns as wide as their widest cell; a cell's text on one line."""
    cells = [[("" if v is None else str(v)).replace("\n", " ") for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), ["-" * w for w in widths], *cells]:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _shown(ident: str) -> str:
    """An id as the operator typed it, for a message (never a screenful)."""
    return repr(ident if len(ident) <= reports.MAX_SEARCH else ident[:reports.MAX_SEARCH] + "…")


def _kes(amount: Any) -> str:
    return f"KES {int(amount):,}"


def _payment_rows(rows: Sequence[reports.Payment]) -> list[list[Any]]:
    return [[p.created_local, p.status + (" (late)" if p.late else ""), _kes(p.amount), p.phone, p.receipt or "-",
             p.order_reference or p.account_reference, p.checkout_request_id] for p in rows]


PAYMENT_HEADERS = ("time (EAT)", "status", "amount", "phone", "receipt", "reference", "checkout request id")


def _filters(args: argparse.Namespace, statuses: tuple[str, ...] = reports.PAYMENT_STATUSES) -> reports.Filters:
    try:
        return reports.Filters.parse({"q": args.q, "status": args.status, "from": args.since, "to": args.until},
                                     statuses)
    except reports.ReportError as exc:
        raise Usage(f"--{exc.field if exc.field != 'q' else 'search'}: {exc.message}") from None


def _page_note(out: TextIO, page: reports.Page, what: str) -> None:
    if not page.rows:
        out.write(f"No {what}.\n")
        return
    more = f"; the next page: --offset {page.next_offset}" if page.next_offset is not None else ""
    out.write(f"{page.offset + 1}-{page.offset + len(page.rows)} of {page.total} {what}{more}\n")


# -- the commands --------------------------------------------------------------------------------

async def cmd_list(store: TransactionStore, args: argparse.Namespace, out: TextIO) -> int:
    page = await reports.payments(store, _filters(args), limit=args.limit, offset=args.offset)
    if args.json:
        write_json(out, {"total": page.total, "offset": page.offset, "payments": page.rows})
        return 0
    if page.rows:
        write_table(out, PAYMENT_HEADERS, _payment_rows(page.rows))
    _page_note(out, page, "payments")
    return 0


async def cmd_totals(store: TransactionStore, args: argparse.Namespace, out: TextIO) -> int:
    totals = await reports.daily_totals(store, _filters(args), days=args.days)
    if args.json:
        write_json(out, totals)
        return 0
    write_table(out, ("day (EAT)", "payments", "paid", "amount paid", "failed", "waiting"),
                [[d.day, d.payments, d.completed, _kes(d.paid_amount), d.failed, d.pending] for d in totals])
    return 0


async def _show_payment(store: TransactionStore, ident: str, args: argparse.Namespace, out: TextIO) -> int:
    found = await reports.payment(store, ident)
    if found is None:
        out.write(f"No payment, order or webhook event has the id {_shown(ident)}.\n")
        return 1
    callbacks = await reports.callbacks_of(store, found.checkout_request_id)
    events = await reports.events_about(store, found.checkout_request_id)
    if args.json:
        write_json(out, {"payment": found, "callbacks": callbacks, "webhooks": events})
        return 0
    facts = [("CheckoutRequestID", found.checkout_request_id), ("status", found.status + (" (late)" if found.late
                                                                                          else "")),
             ("amount", _kes(found.amount)), ("phone", found.phone), ("receipt", found.receipt or "-"),
             ("reference", found.account_reference), ("order", f"{found.order_id} ({found.order_reference})"
                                                      if found.order_id else "-"),
             ("asked", f"{found.created_local} EAT"),
             ("settled", f"{found.settled_local} EAT by {found.settled_by}" if found.settled_at else "not yet"),
             ("result", f"{found.result_code}: {found.result_desc}" if found.result_code else "-"),
             ("customer told", found.message)]
    write_table(out, ("payment", ""), facts)
    if callbacks:
        out.write("\n")
        write_table(out, ("callback received (EAT)", "outcome", "said", "note"),
                    [[c.received_local, c.outcome, f"{c.result_code} {c.result_desc or ''}".strip(), c.note or ""]
                     for c in callbacks])
    _event_table(out, events)
    return 0


def _event_table(out: TextIO, events: Sequence[reports.WebhookEvent]) -> None:
    if not events:
        return
    out.write("\n")
    write_table(out, ("created (EAT)", "event", "state", "attempts", "last answer", "id"),
                [[e.created_local, e.type, e.state, e.attempts,
                  e.last_error or (f"HTTP {e.last_status}" if e.last_status else "-"), e.event_id] for e in events])


async def _show_order(store: TransactionStore, ident: str, args: argparse.Namespace, out: TextIO) -> int:
    found = await reports.order(store, ident)
    if found is None:
        out.write(f"No order has the id {_shown(ident)}.\n")
        return 1
    paid = await reports.order_payments(store, found.order_id)
    events = await reports.events_about(store, found.order_id)
    if args.json:
        write_json(out, {"order": found, "payments": paid, "webhooks": events})
        return 0
    write_table(out, ("order", ""), [("id", found.order_id), ("reference", found.reference),
                                     ("amount", _kes(found.amount)), ("status", found.status),
                                     ("created", f"{found.created_local} EAT"),
                                     ("paid", f"{found.paid_local} EAT by {found.checkout_request_id}"
                                      if found.paid_at else "not yet")])
    if found.double_paid:
        out.write(f"\nDOUBLE PAYMENT: {found.completed} payments completed for this order; refund the extra.\n")
    if paid:
        out.write("\n")
        write_table(out, PAYMENT_HEADERS, _payment_rows(paid))
    _event_table(out, events)
    return 0


async def _show_event(store: TransactionStore, ident: str, args: argparse.Namespace, out: TextIO) -> int:
    event = await reports.webhook_event(store, ident)
    if event is None:
        out.write(f"No webhook event has the id {_shown(ident)}.\n")
        return 1
    if args.json:
        write_json(out, {"event": event, "body": json.loads(event.body)})
        return 0
    write_table(out, ("webhook event", ""), [("id", event.event_id), ("type", event.type), ("state", event.state),
                                             ("created", f"{event.created_local} EAT"), ("attempts", event.attempts),
                                             ("delivered", event.delivered_local or "-"),
                                             ("last answer", event.last_error or event.last_status or "-")])
    if event.tries:
        out.write("\n")
        write_table(out, ("attempt at (EAT)", "answer", "took"),
                    [[t.at_local, t.error or f"HTTP {t.status}", f"{t.duration_ms or 0:.0f} ms"] for t in event.tries])
    out.write("\n" + event.pretty_body + "\n")
    return 0


async def cmd_show(store: TransactionStore, args: argparse.Namespace, out: TextIO) -> int:
    ident = reports.usable_text(args.id).strip()
    if ident.startswith("ord_"):
        return await _show_order(store, ident, args, out)
    if ident.startswith("evt_"):
        return await _show_event(store, ident, args, out)
    return await _show_payment(store, ident, args, out)


async def cmd_orders(store: TransactionStore, args: argparse.Namespace, out: TextIO) -> int:
    page = await reports.orders(store, _filters(args, reports.ORDER_STATUSES), limit=args.limit, offset=args.offset)
    if args.json:
        write_json(out, {"total": page.total, "offset": page.offset, "orders": page.rows})
        return 0
    if page.rows:
        write_table(out, ("created (EAT)", "reference", "status", "amount", "payments", "order id"),
                    [[o.created_local, o.reference, o.status + (f" (paid {o.completed} times)" if o.double_paid
                                                                else ""),
                      _kes(o.amount), o.payments, o.order_id] for o in page.rows])
    _page_note(out, page, "orders")
    return 0


def _listed(out: TextIO, args: argparse.Namespace, found: Sequence[Any], none: str) -> bool:
    """Write `found` as JSON (--json) or say `none` when it is empty: True if that was all to write."""
    if args.json:
        write_json(out, found)
        return True
    if not found:
        out.write(none + "\n")
        return True
    return False


async def cmd_unmatched(store: TransactionStore, args: argparse.Namespace, out: TextIO) -> int:
    outcomes = (args.outcome,) if args.outcome else reports.UNMATCHED_OUTCOMES
    found = await reports.unmatched_callbacks(store, outcomes, limit=args.limit)
    if not _listed(out, args, found, "No callbacks that matched nothing or could not be verified."):
        write_table(out, ("received (EAT)", "outcome", "checkout request id", "said", "amount", "receipt", "why"),
                    [[c.received_local, c.outcome, c.checkout_request_id or "-",
                      "PAID" if c.money_taken else f"{c.result_code} {c.result_desc or ''}".strip(),
                      c.amount or "-", c.receipt or "-", c.note or ""] for c in found])
    return 0


async def cmd_lost(store: TransactionStore, args: argparse.Namespace, out: TextIO) -> int:
    found = await reports.lost_answers(store, limit=args.limit)
    if not _listed(out, args, found, "No pushes whose answer was lost."):
        write_table(out, ("sent (EAT)", "phone", "amount", "reference", "order id"),
                    [[a.created_local, a.phone, _kes(a.amount), a.account_reference, a.order_id or "-"]
                     for a in found])
    return 0


async def cmd_late(store: TransactionStore, args: argparse.Namespace, out: TextIO) -> int:
    found = await reports.late_successes(store, limit=args.limit)
    if not _listed(out, args, found, "No late successes."):
        write_table(out, PAYMENT_HEADERS, _payment_rows(found))
    return 0


async def cmd_doubles(store: TransactionStore, args: argparse.Namespace, out: TextIO) -> int:
    found = await reports.double_payments(store, limit=args.limit)
    if _listed(out, args, found, "No order was paid more than once."):
        return 0
    for i, double in enumerate(found):
        out.write(("\n" if i else "") + f"Order {double.order.reference} ({double.order.order_id}), "
                  f"{_kes(double.order.amount)}, paid {len(double.payments)} times:\n")
        write_table(out, PAYMENT_HEADERS, _payment_rows(double.payments))
    return 0


async def cmd_webhooks(store: TransactionStore, args: argparse.Namespace, out: TextIO) -> int:
    try:
        page = await reports.webhook_events(store, state=args.state or "", search=args.q or "", limit=args.limit,
                                            offset=args.offset)
    except reports.ReportError as exc:
        raise Usage(exc.message) from None
    if args.json:
        write_json(out, {"total": page.total, "offset": page.offset, "events": page.rows})
        return 0
    if page.rows:
        write_table(out, ("created (EAT)", "event", "state", "attempts", "last answer", "about", "id"),
                    [[e.created_local, e.type, e.state, e.attempts,
                      e.last_error or (f"HTTP {e.last_status}" if e.last_status else "-"),
                      e.data.get("checkoutRequestId") or e.data.get("orderId") or "-", e.event_id]
                     for e in page.rows])
    _page_note(out, page, "webhook events")
    return 0


async def cmd_resend(store: TransactionStore, args: argparse.Namespace, out: TextIO) -> int:
    from .webhooks import resend_event  # here only: the other commands start without the web stack

    ident = reports.usable_text(args.id).strip()
    if not ident or len(ident) > reports.MAX_SEARCH or not await resend_event(store, ident):
        out.write(f"No webhook event has the id {_shown(ident)}.\n")
        return 1
    out.write(f"Queued {ident} again (same id, same body): a running gateway sends it within a second.\n")
    return 0


async def cmd_export(store: TransactionStore, args: argparse.Namespace, out: TextIO) -> int:
    filters = _filters(args)
    if args.output in (None, "-"):
        async for chunk in reports.payments_csv(store, filters):
            out.write(chunk)
        return 0
    count = -1  # the header
    try:
        target = open(args.output, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise Usage(f"-o: cannot write {args.output}: {exc.strerror or exc}") from None
    with target:
        async for chunk in reports.payments_csv(store, filters):
            target.write(chunk)
            count += chunk.count("\r\n")
    out.write(f"Wrote {count} payments to {args.output}\n")
    return 0


# -- the command line ----------------------------------------------------------------------------

def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # "²".isdigit() is True, and int("²") fails


def _positive(text: str) -> int:
    if not _digits(text) or len(text) > 9 or not 1 <= int(text) <= reports.MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"a whole number from 1 to {reports.MAX_PAGE_SIZE}")
    return int(text)


def _whole(text: str) -> int:
    if not _digits(text) or len(text) > 9 or int(text) > reports.MAX_OFFSET:
        raise argparse.ArgumentTypeError(f"a whole number from 0 to {reports.MAX_OFFSET}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database", metavar="URL",
                        help="sqlite:///path or postgresql://… (default: DATABASE_URL, as the gateway)")
    common.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("-q", "--search", dest="q", metavar="TEXT", help="a phone, receipt, reference or id")
    filters.add_argument("--status", help="pending, completed or failed (orders: open or paid)")
    filters.add_argument("--from", dest="since", metavar="YYYY-MM-DD", help="from this Nairobi day")
    filters.add_argument("--to", dest="until", metavar="YYYY-MM-DD", help="to this Nairobi day (included)")
    paged = argparse.ArgumentParser(add_help=False)
    paged.add_argument("--limit", type=_positive, default=reports.PAGE_SIZE, help="rows (default %(default)s)")
    paged.add_argument("--offset", type=_whole, default=0, help="skip this many rows (the next page)")
    limited = argparse.ArgumentParser(add_help=False)
    limited.add_argument("--limit", type=_positive, default=200, help="rows (default %(default)s)")

    top = argparse.ArgumentParser(prog="run.py payments", description="The operator's view from a terminal, read "
                                  "from DATABASE_URL's database (the gateway need not be running).")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, command: Command, text: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, parents=[common, *parents])
        p.set_defaults(run=command)
        return p

    add("list", cmd_list, "payments, newest first", filters, paged)
    totals = add("totals", cmd_totals, "totals per Nairobi day of the payments", filters)
    totals.add_argument("--days", type=_positive, default=31, help="days (default %(default)s)")
    add("show", cmd_show, "one payment (CheckoutRequestID or receipt), order (ord_…) or webhook event (evt_…)") \
        .add_argument("id")
    add("orders", cmd_orders, "orders, newest first", filters, paged)
    add("unmatched", cmd_unmatched, "callbacks that matched nothing or could not be verified", limited) \
        .add_argument("--outcome", choices=reports.UNMATCHED_OUTCOMES)
    add("lost", cmd_lost, "pushes whose answer from Daraja was lost", limited)
    add("late", cmd_late, "late successes: completed after the gateway had given up on them", limited)
    add("doubles", cmd_doubles, "orders paid more than once", limited)
    hooks = add("webhooks", cmd_webhooks, "the webhook outbox, newest first", paged)
    hooks.add_argument("--state", choices=reports.WEBHOOK_STATES)
    hooks.add_argument("-q", "--search", dest="q", metavar="TEXT", help="an event, payment or order id, a receipt")
    add("resend", cmd_resend, "send a webhook event again (same id and body)").add_argument("id")
    add("export", cmd_export, "payments as CSV (the filters of list)", filters) \
        .add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: standard output)")
    return top


async def run(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    try:
        url = database_url(env, args.database)
    except DatabaseProblem as exc:
        raise Usage(str(exc)) from None
    try:
        store = await open_database(url)
        try:
            command: Command = args.run
            return await command(store, args, out)
        finally:
            await store.close()
    except sqlite3.DatabaseError as exc:
        raise Usage(f"{sqlite_path(url)} cannot be read as the gateway's database ({exc})") from None
    except PG_ERRORS as exc:
        raise Usage(f"{hide_password(url)}: {exc}") from None


def main(argv: Sequence[str], env: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    args = parser().parse_args(list(argv))
    try:
        return asyncio.run(run(args, os.environ if env is None else env, out or sys.stdout))
    except Usage as exc:
        print(f"run.py payments: {exc}", file=sys.stderr)
        return 2
