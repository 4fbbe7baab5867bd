"""The operator's view of the store: what was paid, what went wrong, and what the shop was told.

Every function here reads committed data through `store.fetch_one/fetch_all` (the store's read
connection, or any object with those two methods), so the admin pages (web/admin.py) and the
`python run.py payments …` command (gateway/payments_cli.py) answer the same questions the same way:

- payments (with their order's reference) searched by phone, receipt, reference or id, filtered by
  status and by day, and their totals per day; the same rows as CSV;
- orders, with how many of their payments completed (more than one: a double payment);
- the callbacks that matched nothing (`unknown`) or that Daraja did not confirm (`unverified`);
- the pushes whose answer was lost (`push_attempts.state = 'unknown'`: the customer may have been
  prompted, and a callback for it would still be adopted);
- late successes (a payment the gateway had given up on that M-Pesa completed after all);
- the webhook outbox: each event's state, its attempts, and the body the shop receives.

Days are Nairobi days (EAT, UTC+3, no summer time), which is what an operator in Kenya calls "today";
times are stored in UTC and shown here in both forms where it matters.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from .daraja.wire import NAIROBI
from .result_messages import customer_message
from .storage import CHECK_OVERDUE_AFTER

PAYMENT_STATUSES = ("pending", "completed", "failed")
ORDER_STATUSES = ("open", "paid")
WEBHOOK_STATES = ("pending", "delivered", "failed")
UNMATCHED_OUTCOMES = ("unknown", "unverified")
MAX_SEARCH = 100
PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_OFFSET = 999_999_999  # rows skipped at most (a page past the end is an empty page, never an error)
NAIROBI_SHIFT = "+3 hours"  # SQLite's date() of a UTC time, in Nairobi (EAT has no summer time)
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits only (\d would take "٢٠٢٦")
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)  # the days a filter may name
PHONE_LIKE = re.compile(r"\+?[0-9\s-]+", re.ASCII)
LIKE_ESCAPE = "\\"


class Reader(Protocol):
    """What the reports need of a store: reads of committed data."""

    async def fetch_one(self, sql: str, args: Iterable[Any] = ()) -> Any: ...

    async def fetch_all(self, sql: str, args: Iterable[Any] = ()) -> list[Any]: ...


class ReportError(ValueError):
    """A filter that cannot be used: `message` says why, `field` names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message, self.field = message, field


# -- time ----------------------------------------------------------------------------------------

def nairobi_time(iso_text: str | None) -> str:
    """"2026-11-26T09:20:46.662Z" → "2026-11-26 12:20:46" (Nairobi time); "" for none."""
    if not iso_text:
        return ""
    try:
        moment = datetime.fromisoformat(iso_text.replace("Z", "+00:00"))
    except ValueError:
        return iso_text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(NAIROBI).strftime("%Y-%m-%d %H:%M:%S")


def _utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def day_start(day: date) -> str:
    """The first instant of a Nairobi day, as the store writes times (UTC ISO, milliseconds, Z)."""
    return _utc_iso(datetime.combine(day, time.min, NAIROBI))


def today() -> date:
    return datetime.now(NAIROBI).date()


def usable_text(value: Any) -> str:
    """`value` as text the database can be asked about: a lone surrogate (from a command line's
    undecodable bytes, or a URL's broken escapes) or a NUL (which PostgreSQL's text cannot hold)
    becomes U+FFFD instead of an encoding error."""
    text = "" if value is None else str(value).replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text


def _day(raw: str | None, name: str) -> date | None:
    raw = usable_text(raw).strip()
    if not raw:
        return None
    if not DAY.fullmatch(raw):
        raise ReportError(f"{name} must be a day written YYYY-MM-DD (got {raw[:20]!r})", name)
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise ReportError(f"{name} is not a day of the calendar ({raw})", name) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ReportError(f"{name} must be a day from {FIRST_DAY} to {LAST_DAY} (got {raw})", name)
    return day


# -- filters -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Filters:
    """Which payments (or orders): `search` a phone, receipt, reference or id; `status`; Nairobi days
    `since` to `until`, both included."""

    search: str = ""
    status: str = ""
    since: date | None = None
    until: date | None = None

    @classmethod
    def parse(cls, values: Mapping[str, Any], statuses: tuple[str, ...] = PAYMENT_STATUSES) -> Filters:
        """From a query string or the command line: `q`, `status`, `from`, `to`. Raises ReportError."""
        search = usable_text(values.get("q")).strip()
        if len(search) > MAX_SEARCH:
            raise ReportError(f"q must be at most {MAX_SEARCH} characters", "q")
        status = usable_text(values.get("status")).strip().lower()
        if status and status not in statuses:
            raise ReportError(f"status must be one of {', '.join(statuses)}", "status")
        since, until = _day(values.get("from"), "from"), _day(values.get("to"), "to")
        if since and until and since > until:
            raise ReportError("from must not be after to", "from")
        return cls(search, status, since, until)

    def query(self) -> dict[str, str]:
        """The filters as query-string values (for links that keep them: CSV, next page)."""
        values = {"q": self.search, "status": self.status, "from": self.since.isoformat() if self.since else "",
                  "to": self.until.isoformat() if self.until else ""}
        return {k: v for k, v in values.items() if v}

    @property
    def active(self) -> bool:
        return bool(self.search or self.status or self.since or self.until)


def _like(text: str) -> str:
    """`%text%` for `_contains`, with LIKE's wildcards in `text` escaped, in lower case."""
    text = text.lower()
    escaped = text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%").replace("_", LIKE_ESCAPE + "_")
    return f"%{escaped}%"


def _contains(column: str) -> str:
    """`column` contains the `_like` argument, in any case, on both databases (SQLite's LIKE ignores
    ASCII case, PostgreSQL's does not: both sides lowered)."""
    return f"LOWER({column}) LIKE ? ESCAPE '{LIKE_ESCAPE}'"


def phone_digits(search: str) -> str | None:
    """The digits to look for at the end of stored phones (254…), if `search` reads as a phone:
    "0712 345 678", "+254712345678", "712345678" → "712345678"; "5678" → "5678"."""
    if not PHONE_LIKE.fullmatch(search):
        return None
    digits = re.sub(r"\D", "", search)
    if len(digits) < 4:
        return None
    if digits.startswith("254") and len(digits) == 12:
        digits = digits[3:]
    elif digits.startswith("0") and len(digits) == 10:
        digits = digits[1:]
    return digits[-9:]


def _search_clause(search: str) -> tuple[str, list[Any]]:
    """Payments (`t`, joined with their order `o`) that the search names."""
    conds = ["t.checkout_request_id = ?", "t.merchant_request_id = ?", "t.receipt = ?", "t.order_id = ?",
             _contains("t.account_reference"), _contains("o.reference")]
    args: list[Any] = [search, search, search.upper(), search, _like(search), _like(search)]
    digits = phone_digits(search)
    if digits is not None:
        conds.append("t.phone LIKE ?")
        args.append(f"%{digits}")
    return "(" + " OR ".join(conds) + ")", args


def _where(filters: Filters, table: str, search: Callable[[str], tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    """The WHERE clause of a listing of `table` (its alias: t or o) and its arguments."""
    conds: list[str] = []
    args: list[Any] = []
    if filters.search:
        clause, more = search(filters.search)
        conds.append(clause)
        args += more
    if filters.status:
        conds.append(f"{table}.status = ?")
        args.append(filters.status)
    if filters.since:
        conds.append(f"{table}.created_at >= ?")
        args.append(day_start(filters.since))
    if filters.until:
        conds.append(f"{table}.created_at < ?")
        args.append(day_start(filters.until + timedelta(days=1)))
    return (" WHERE " + " AND ".join(conds)) if conds else "", args


def _payment_where(filters: Filters) -> tuple[str, list[Any]]:
    return _where(filters, "t", _search_clause)


# -- payments ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Payment:
    """A payment as the operator sees it (the phone in full: the operator may search by it)."""

    checkout_request_id: str
    created_at: str
    status: str
    amount: int
    phone: str
    receipt: str | None
    account_reference: str
    description: str
    order_id: str | None
    order_reference: str | None
    result_code: str | None
    result_desc: str | None
    settled_by: str | None
    settled_at: str | None
    late: bool
    merchant_request_id: str
    callback_count: int
    query_attempts: int

    @property
    def message(self) -> str:
        """What the customer was told."""
        if self.status == "pending":
            return "Waiting for the customer"
        if self.status == "completed":
            return "Paid" + (" (late: after the gateway had given up)" if self.late else "")
        return customer_message(self.result_code, self.result_desc or "")

    @property
    def created_local(self) -> str:
        return nairobi_time(self.created_at)

    @property
    def settled_local(self) -> str:
        return nairobi_time(self.settled_at)


PAYMENT_COLUMNS = (
    "t.checkout_request_id, t.created_at, t.status, t.amount, t.phone, t.receipt, t.account_reference, "
    "t.description, t.order_id, o.reference AS order_reference, t.result_code, t.result_desc, t.settled_by, "
    "t.settled_at, t.late, t.merchant_request_id, t.callback_count, t.query_attempts")
PAYMENTS_JOINED = "FROM transactions t LEFT JOIN orders o ON o.order_id = t.order_id"
PAYMENT_SELECT = f"SELECT {PAYMENT_COLUMNS} {PAYMENTS_JOINED}"


def _payment(row: Any) -> Payment:
    values = dict(row)
    values["late"] = bool(values["late"])
    return Payment(**values)


@dataclass(frozen=True)
class Page:
    """One page of rows: `total` rows match, these are from `offset` on."""

    rows: list[Any]
    total: int
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        following = self.offset + len(self.rows)
        return following if following < self.total else None

    @property
    def previous_offset(self) -> int | None:
        return max(self.offset - self.limit, 0) if self.offset > 0 else None


def _bounds(limit: int, offset: int) -> tuple[int, int]:
    return max(1, min(limit, MAX_PAGE_SIZE)), max(0, min(offset, MAX_OFFSET))


async def payments(store: Reader, filters: Filters = Filters(), *, limit: int = PAGE_SIZE,
                   offset: int = 0) -> Page:
    """The payments that match, newest first."""
    limit, offset = _bounds(limit, offset)
    where, args = _payment_where(filters)
    count = await store.fetch_one(
        f"SELECT COUNT(*) {PAYMENTS_JOINED}{where}", args)
    rows = await store.fetch_all(f"{PAYMENT_SELECT}{where} ORDER BY t.created_at DESC, t.rowid DESC LIMIT ? OFFSET ?",
                                 [*args, limit, offset])
    return Page([_payment(r) for r in rows], int(count[0]) if count else 0, offset, limit)


async def payment(store: Reader, ident: str) -> Payment | None:
    """One payment by CheckoutRequestID, or by its M-Pesa receipt."""
    ident = usable_text(ident).strip()
    if not ident or len(ident) > MAX_SEARCH:
        return None
    row = await store.fetch_one(f"{PAYMENT_SELECT} WHERE t.checkout_request_id = ? OR t.receipt = ? LIMIT 1",
                                (ident, ident.upper()))
    return _payment(row) if row else None


@dataclass(frozen=True)
class DayTotal:
    """One Nairobi day of the payments that match: how many, and how much was paid."""

    day: str
    payments: int
    completed: int
    paid_amount: int
    failed: int
    pending: int


def _nairobi_day(store: Reader, column: str) -> str:
    """SQL for the Nairobi day (YYYY-MM-DD) of a stored UTC time (ISO text ending in Z)."""
    if getattr(store, "dialect", "sqlite") == "postgresql":
        return f"to_char(({column})::timestamptz AT TIME ZONE 'UTC' + interval '3 hours', 'YYYY-MM-DD')"
    return f"date({column}, '{NAIROBI_SHIFT}')"


async def daily_totals(store: Reader, filters: Filters = Filters(), *, days: int = 366) -> list[DayTotal]:
    """Totals per Nairobi day (the day each payment was asked), newest day first."""
    where, args = _payment_where(filters)
    rows = await store.fetch_all(
        f"SELECT {_nairobi_day(store, 't.created_at')} AS day, COUNT(*), "
        "SUM(CASE WHEN t.status = 'completed' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN t.status = 'completed' THEN t.amount ELSE 0 END), "
        "SUM(CASE WHEN t.status = 'failed' THEN 1 ELSE 0 END), SUM(CASE WHEN t.status = 'pending' THEN 1 ELSE 0 END) "
        f"{PAYMENTS_JOINED}{where} "
        "GROUP BY day ORDER BY day DESC LIMIT ?", [*args, max(1, days)])
    return [DayTotal(str(r[0]), int(r[1]), int(r[2] or 0), int(r[3] or 0), int(r[4] or 0), int(r[5] or 0))
            for r in rows]


# -- the CSV export ------------------------------------------------------------------------------

CSV_COLUMNS = ("checkout_request_id", "created_at", "created_at_nairobi", "status", "amount", "phone", "receipt",
               "account_reference", "description", "order_id", "order_reference", "result_code", "result_desc",
               "settled_by", "settled_at", "late")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A value a spreadsheet will not run as a formula (a description could be "=HYPERLINK(…)")."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return "" if value is None else value


def csv_row(p: Payment) -> list[Any]:
    values = {**{name: getattr(p, name, None) for name in CSV_COLUMNS}, "created_at_nairobi": p.created_local,
              "late": int(p.late)}
    return [_cell(values[name]) for name in CSV_COLUMNS]


def _csv_text(rows: Iterable[Iterable[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


async def payments_csv(store: Reader, filters: Filters = Filters(), *, batch: int = 500) -> AsyncIterator[str]:
    """The matching payments as CSV text (the header, then a chunk per batch), newest first. Read
    in batches by row, so that payments made during the export neither repeat nor push rows out."""
    yield _csv_text([CSV_COLUMNS])
    where, args = _payment_where(filters)
    last: int | None = None
    while True:
        cond = where if last is None else f"{where}{' AND ' if where else ' WHERE '}t.rowid < ?"
        rows = await store.fetch_all(
            f"SELECT t.rowid AS row_id, {PAYMENT_COLUMNS} {PAYMENTS_JOINED}{cond} ORDER BY t.rowid DESC LIMIT ?",
            [*args, *([] if last is None else [last]), batch])
        if not rows:
            return
        found = [dict(r) for r in rows]
        last = int(found[-1].pop("row_id"))
        yield _csv_text(csv_row(_payment({k: v for k, v in row.items() if k != "row_id"})) for row in found)
        if len(rows) < batch:
            return


# -- orders --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OrderRow:
    order_id: str
    reference: str
    description: str
    amount: int
    status: str
    checkout_request_id: str | None
    created_at: str
    paid_at: str | None
    payments: int
    completed: int
    items: list[dict[str, Any]] = field(default_factory=list)
    metadata: Any = None

    @property
    def double_paid(self) -> bool:
        return self.completed > 1

    @property
    def created_local(self) -> str:
        return nairobi_time(self.created_at)

    @property
    def paid_local(self) -> str:
        return nairobi_time(self.paid_at)


ORDER_SELECT = (
    "SELECT o.order_id, o.reference, o.description, o.amount, o.status, o.checkout_request_id, o.created_at, "
    "o.paid_at, o.items, o.metadata, "
    "(SELECT COUNT(*) FROM transactions t WHERE t.order_id = o.order_id) AS payments, "
    "(SELECT COUNT(*) FROM transactions t WHERE t.order_id = o.order_id AND t.status = 'completed') AS completed "
    "FROM orders o")


def _json(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _order(row: Any) -> OrderRow:
    values = dict(row)
    values["items"] = _json(values.get("items"), [])
    values["metadata"] = _json(values.get("metadata"), None)
    return OrderRow(**values)


def _order_search(search: str) -> tuple[str, list[Any]]:
    """Orders by id or reference, or by one of their payments (id, receipt, phone)."""
    by_payment = ["t.checkout_request_id = ?", "t.receipt = ?"]
    payment_args: list[Any] = [search, search.upper()]
    digits = phone_digits(search)
    if digits is not None:
        by_payment.append("t.phone LIKE ?")
        payment_args.append(f"%{digits}")
    clause = (f"(o.order_id = ? OR {_contains('o.reference')} OR EXISTS (SELECT 1 FROM transactions t "
              f"WHERE t.order_id = o.order_id AND ({' OR '.join(by_payment)})))")
    return clause, [search, _like(search), *payment_args]


def _order_where(filters: Filters) -> tuple[str, list[Any]]:
    return _where(filters, "o", _order_search)


async def orders(store: Reader, filters: Filters = Filters(), *, limit: int = PAGE_SIZE, offset: int = 0) -> Page:
    """The orders that match (status open or paid), newest first."""
    limit, offset = _bounds(limit, offset)
    where, args = _order_where(filters)
    count = await store.fetch_one(f"SELECT COUNT(*) FROM orders o{where}", args)
    rows = await store.fetch_all(f"{ORDER_SELECT}{where} ORDER BY o.created_at DESC, o.rowid DESC LIMIT ? OFFSET ?",
                                 [*args, limit, offset])
    return Page([_order(r) for r in rows], int(count[0]) if count else 0, offset, limit)


async def order(store: Reader, order_id: str) -> OrderRow | None:
    order_id = usable_text(order_id).strip()
    if not order_id or len(order_id) > MAX_SEARCH:
        return None
    row = await store.fetch_one(f"{ORDER_SELECT} WHERE o.order_id = ?", (order_id,))
    return _order(row) if row else None


async def order_payments(store: Reader, order_id: str) -> list[Payment]:
    rows = await store.fetch_all(f"{PAYMENT_SELECT} WHERE t.order_id = ? ORDER BY t.created_at DESC, t.rowid DESC",
                                 (order_id,))
    return [_payment(r) for r in rows]


@dataclass(frozen=True)
class DoublePayment:
    """An order that more than one payment completed: the customer paid twice; refund one."""

    order: OrderRow
    payments: list[Payment]


async def double_payments(store: Reader, *, limit: int = 200) -> list[DoublePayment]:
    """Orders with more than one completed payment, newest order first (every payment is kept)."""
    rows = await store.fetch_all(
        "SELECT order_id FROM transactions WHERE order_id IS NOT NULL AND status = 'completed' "
        "GROUP BY order_id HAVING COUNT(*) > 1 ORDER BY MAX(settled_at) DESC LIMIT ?", (limit,))
    found: list[DoublePayment] = []
    for row in rows:
        the_order = await order(store, row[0])
        if the_order is not None:
            paid = [p for p in await order_payments(store, row[0]) if p.status == "completed"]
            found.append(DoublePayment(the_order, paid))
    return found


# -- what went wrong -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Callback:
    """A logged callback body, with what it says read out of it (if it can be read)."""

    id: int
    checkout_request_id: str | None
    received_at: str
    outcome: str
    note: str | None
    body: str
    result_code: str | None = None
    result_desc: str | None = None
    amount: str | None = None
    receipt: str | None = None
    phone: str | None = None
    merchant_request_id: str | None = None

    @property
    def received_local(self) -> str:
        return nairobi_time(self.received_at)

    @property
    def money_taken(self) -> bool:
        """Whether it says the customer paid (ResultCode 0): someone must look at it."""
        return self.result_code == "0"

    @property
    def pretty_body(self) -> str:
        parsed = _json(self.body, None)
        return json.dumps(parsed, indent=2, ensure_ascii=False) if parsed is not None else self.body


def _text_of(value: Any) -> str | None:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Daraja writes amounts 100.00
    return None if value is None else str(value)


def read_callback_body(body: str) -> dict[str, str | None]:
    """ResultCode, ResultDesc, Amount, MpesaReceiptNumber, PhoneNumber and MerchantRequestID of a
    Daraja callback body (whatever it holds: each is None when absent or unreadable)."""
    parsed = _json(body, None)
    stk = parsed.get("Body", {}).get("stkCallback") if isinstance(parsed, dict) and isinstance(
        parsed.get("Body"), dict) else None
    if not isinstance(stk, dict):
        return {}
    items: dict[str, Any] = {}
    metadata = stk.get("CallbackMetadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("Item"), list):
        items = {str(i.get("Name")): i.get("Value") for i in metadata["Item"] if isinstance(i, dict)}
    return {"result_code": _text_of(stk.get("ResultCode")), "result_desc": _text_of(stk.get("ResultDesc")),
            "amount": _text_of(items.get("Amount")), "receipt": _text_of(items.get("MpesaReceiptNumber")),
            "phone": _text_of(items.get("PhoneNumber")),
            "merchant_request_id": _text_of(stk.get("MerchantRequestID"))}


def _callback(row: Any) -> Callback:
    said = read_callback_body(row["body"])
    return Callback(id=int(row["id"]), checkout_request_id=row["checkout_request_id"], received_at=row["received_at"],
                    outcome=row["outcome"], note=row["note"], body=row["body"], result_code=said.get("result_code"),
                    result_desc=said.get("result_desc"), amount=said.get("amount"), receipt=said.get("receipt"),
                    phone=said.get("phone"), merchant_request_id=said.get("merchant_request_id"))


async def unmatched_callbacks(store: Reader, outcomes: Iterable[str] = UNMATCHED_OUTCOMES, *,
                              limit: int = 200) -> list[Callback]:
    """Callbacks that matched no payment (`unknown`) or that Daraja did not confirm (`unverified`),
    newest first."""
    wanted = [o for o in outcomes if o in UNMATCHED_OUTCOMES] or list(UNMATCHED_OUTCOMES)
    rows = await store.fetch_all(
        f"SELECT id, checkout_request_id, received_at, outcome, note, body FROM callback_log "
        f"WHERE outcome IN ({', '.join('?' for _ in wanted)}) ORDER BY id DESC LIMIT ?", [*wanted, limit])
    return [_callback(r) for r in rows]


async def callbacks_of(store: Reader, checkout_request_id: str) -> list[Callback]:
    rows = await store.fetch_all("SELECT id, checkout_request_id, received_at, outcome, note, body FROM callback_log "
                                 "WHERE checkout_request_id = ? ORDER BY id", (checkout_request_id,))
    return [_callback(r) for r in rows]


@dataclass(frozen=True)
class LostAnswer:
    """A push whose answer from Daraja never came (a time-out): the customer may have been
    prompted; a callback for it is adopted (after Daraja confirms it) if one comes."""

    id: int
    phone: str
    amount: int
    account_reference: str
    description: str
    state: str
    checkout_request_id: str | None
    created_at: str
    order_id: str | None

    @property
    def created_local(self) -> str:
        return nairobi_time(self.created_at)


async def lost_answers(store: Reader, *, limit: int = 200) -> list[LostAnswer]:
    rows = await store.fetch_all(
        "SELECT id, phone, amount, account_reference, description, state, checkout_request_id, created_at, order_id "
        "FROM push_attempts WHERE state = 'unknown' ORDER BY created_epoch DESC LIMIT ?", (limit,))
    return [LostAnswer(**dict(r)) for r in rows]


async def late_successes(store: Reader, *, limit: int = 200) -> list[Payment]:
    """Payments M-Pesa completed after the gateway had given up on them (newest first): the
    customer may have been told it failed, and may have paid again."""
    rows = await store.fetch_all(f"{PAYMENT_SELECT} WHERE t.late = 1 ORDER BY t.settled_at DESC LIMIT ?", (limit,))
    return [_payment(r) for r in rows]


@dataclass(frozen=True)
class OverdueCheck:
    """A pending payment whose STK query is CHECK_OVERDUE_AFTER or more past its time: the
    reconciler is behind, or no process is reconciling."""

    payment: Payment
    overdue_seconds: float

    @property
    def overdue_text(self) -> str:
        seconds = max(0, int(self.overdue_seconds))
        if seconds < 60:
            return f"{seconds} s"
        if seconds < 3600:
            return f"{seconds // 60} min {seconds % 60} s"
        return f"{seconds // 3600} h {seconds // 60 % 60} min"


# Pending payments whose STK query was due at or before the given time (the index on next_query_at).
_OVERDUE = "t.next_query_at IS NOT NULL AND t.next_query_at <= ? AND t.status = 'pending'"


def _epoch(now: float | None) -> float:
    return datetime.now(UTC).timestamp() if now is None else now


async def overdue_checks(store: Reader, now: float | None = None, *, limit: int = 200) -> list[OverdueCheck]:
    """The pending payments whose STK query is overdue by CHECK_OVERDUE_AFTER or more, the longest
    overdue first."""
    now = _epoch(now)
    rows = await store.fetch_all(f"SELECT {PAYMENT_COLUMNS}, t.next_query_at AS due_at {PAYMENTS_JOINED} "
                                 f"WHERE {_OVERDUE} ORDER BY t.next_query_at LIMIT ?",
                                 (now - CHECK_OVERDUE_AFTER, limit))
    checks = []
    for row in rows:
        values = dict(row)
        due_at = float(values.pop("due_at"))
        checks.append(OverdueCheck(_payment(values), now - due_at))
    return checks


# -- the webhook outbox --------------------------------------------------------------------------

@dataclass(frozen=True)
class WebhookAttempt:
    at: str
    status: int | None
    error: str | None
    duration_ms: float | None

    @property
    def at_local(self) -> str:
        return nairobi_time(self.at)


@dataclass(frozen=True)
class WebhookEvent:
    event_id: str
    type: str
    body: str
    created_epoch: float
    state: str
    attempts: int
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    delivered_at: str | None
    tries: list[WebhookAttempt] = field(default_factory=list)

    @property
    def data(self) -> dict[str, Any]:
        parsed = _json(self.body, {})
        data = parsed.get("data") if isinstance(parsed, dict) else None
        return data if isinstance(data, dict) else {}

    @property
    def created_at(self) -> str:
        return _utc_iso(datetime.fromtimestamp(self.created_epoch, UTC))

    @property
    def created_local(self) -> str:
        return nairobi_time(self.created_at)

    @property
    def delivered_local(self) -> str:
        return nairobi_time(self.delivered_at)

    @property
    def next_attempt_local(self) -> str:
        if self.next_attempt_at is None or self.state != "pending":
            return ""
        return nairobi_time(_utc_iso(datetime.fromtimestamp(self.next_attempt_at, UTC)))

    @property
    def pretty_body(self) -> str:
        parsed = _json(self.body, None)
        return json.dumps(parsed, indent=2, ensure_ascii=False) if parsed is not None else self.body


EVENT_SELECT = ("SELECT event_id, type, body, created_epoch, state, attempts, next_attempt_at, last_status, "
                "last_error, delivered_at FROM webhook_events")


async def webhook_events(store: Reader, *, state: str = "", search: str = "", limit: int = PAGE_SIZE,
                         offset: int = 0) -> Page:
    """Events in the outbox, newest first: `state` pending, delivered or failed; `search` an event
    id, or a payment's or order's id or receipt found in the body."""
    state, search = usable_text(state), usable_text(search)
    if state and state not in WEBHOOK_STATES:
        raise ReportError(f"state must be one of {', '.join(WEBHOOK_STATES)}", "state")
    if len(search) > MAX_SEARCH:
        raise ReportError(f"q must be at most {MAX_SEARCH} characters", "q")
    limit, offset = _bounds(limit, offset)
    conds: list[str] = []
    args: list[Any] = []
    if state:
        conds.append("state = ?")
        args.append(state)
    if search.strip():
        conds.append(f"(event_id = ? OR {_contains('body')})")
        args += [search.strip(), _like(json.dumps(search.strip()))]
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    count = await store.fetch_one(f"SELECT COUNT(*) FROM webhook_events{where}", args)
    rows = await store.fetch_all(f"{EVENT_SELECT}{where} ORDER BY created_epoch DESC, rowid DESC LIMIT ? OFFSET ?",
                                 [*args, limit, offset])
    return Page([WebhookEvent(**dict(r)) for r in rows], int(count[0]) if count else 0, offset, limit)


async def webhook_event(store: Reader, event_id: str) -> WebhookEvent | None:
    """One event, with every attempt to deliver it (oldest first)."""
    event_id = usable_text(event_id).strip()
    if not event_id or len(event_id) > MAX_SEARCH:
        return None
    row = await store.fetch_one(f"{EVENT_SELECT} WHERE event_id = ?", (event_id,))
    if row is None:
        return None
    tries = await store.fetch_all("SELECT at, status, error, duration_ms FROM webhook_attempts WHERE event_id = ? "
                                  "ORDER BY id", (row["event_id"],))
    return WebhookEvent(**dict(row), tries=[WebhookAttempt(**dict(t)) for t in tries])


async def events_about(store: Reader, ident: str, *, limit: int = 50) -> list[WebhookEvent]:
    """The events whose data names this payment or order (by id)."""
    page = await webhook_events(store, search=ident, limit=limit)
    return list(page.rows)


# -- a summary for the navigation -----------------------------------------------------------------

@dataclass(frozen=True)
class Attention:
    """How many of each thing an operator should look at."""

    unknown_callbacks: int
    unverified_callbacks: int
    lost_answers: int
    late_successes: int
    double_payments: int
    failed_webhooks: int
    overdue_checks: int

    @property
    def total(self) -> int:
        return (self.unknown_callbacks + self.unverified_callbacks + self.lost_answers + self.late_successes
                + self.double_payments + self.failed_webhooks + self.overdue_checks)


async def attention(store: Reader, now: float | None = None) -> Attention:
    async def one(sql: str, args: Iterable[Any] = ()) -> int:
        row = await store.fetch_one(sql, args)
        return int(row[0]) if row and row[0] is not None else 0

    return Attention(
        unknown_callbacks=await one("SELECT COUNT(*) FROM callback_log WHERE outcome = 'unknown'"),
        unverified_callbacks=await one("SELECT COUNT(*) FROM callback_log WHERE outcome = 'unverified'"),
        lost_answers=await one("SELECT COUNT(*) FROM push_attempts WHERE state = 'unknown'"),
        late_successes=await one("SELECT COUNT(*) FROM transactions WHERE late = 1"),
        double_payments=await one("SELECT COUNT(*) FROM (SELECT order_id FROM transactions WHERE order_id IS NOT NULL "
                                  "AND status = 'completed' GROUP BY order_id HAVING COUNT(*) > 1) AS doubles"),
        failed_webhooks=await one("SELECT COUNT(*) FROM webhook_events WHERE state = 'failed'"),
        overdue_checks=await one(f"SELECT COUNT(*) FROM transactions t WHERE {_OVERDUE}",
                                 (_epoch(now) - CHECK_OVERDUE_AFTER,)),
    )
