"""Orders priced on the server, the checkout's view of an order, idempotent requests and the demo catalogue.

The shop's backend creates an order with its API key (`POST /orders`: line items or an amount, a
reference, metadata); the server computes the amount, and the pay page at the order's checkout URL
pays exactly that: `POST /stkpush {"orderId", "phone"}` takes the amount, AccountReference and
TransactionDesc from the order (handlers.stk_push asks `order_checkout` here). One payment is open
per order at a time; a paid order takes no more pushes. When a payment of an order completes, the
order becomes paid inside the same store transaction (a "payment" listener), and the "order"
listeners (the webhooks) hear of it there too. A second payment completing for a paid order leaves
the order as it was and is logged (DOUBLE PAYMENT); both payments stay recorded.

The orderId (128 random bits) is the checkout's capability: `GET /checkout/{orderId}` and its
status and live updates need nothing else, and lookups of ids that do not exist count towards the
per-client lookup limit, as payment ids do.

In simulator mode (DEMO_CATALOGUE) the pay page orders from a catalogue priced on the server
(gateway/catalogue.json): `GET /catalogue`, `POST /catalogue/orders` with ids and quantities only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from .catalogue import MAX_NAME, MAX_QUANTITY, catalogue_by_id, load_catalogue
from .checkout import (
    Checkout,
    CheckoutError,
    is_clean_text,
    is_visible_text,
    mask_phone,
    normalise_phone,
    parse_amount,
    whole_number,
)
from .clients import client_address
from .config import Settings
from .daraja.wire import ACCOUNT_REFERENCE_MAX, TRANSACTION_DESC_MAX, trim
from .handlers import (
    BadRequest,
    LookupLimited,
    failure,
    limited_lookup,
    read_json_object,
    status_body,
    stream_payment,
    too_many,
)
from .idempotency import protect, public
from .keys import PAYMENTS, SETTINGS, STREAM_LIMITS
from .limits import retry_after_seconds
from .shared import Leases, Limiter, limiter_for
from .storage import Row, StoreTransaction, Transaction, TransactionStore, utc_now

log = logging.getLogger("gateway.orders")

CURRENCY = "KES"
ORDER_ID = re.compile(r"ord_[A-Za-z0-9_-]{22}")
MAX_LINES = 50
MAX_REFERENCE = 64
MAX_DESCRIPTION = 200
MAX_METADATA_BYTES = 4096
MAX_METADATA_DEPTH = 5  # metadata itself is level 1: {"customer": {"address": {...}}} is 3
ORDER_FIELDS = ("items", "amount", "reference", "description", "metadata", "currency")
LINE_FIELDS = ("name", "quantity", "unitPrice")
DEMO_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read out over the phone

NO_KEY = "Orders need SHOP_API_KEY"
BAD_KEY = "Invalid API key"
NOT_FOUND = "Order not found"
TOO_MANY_LOOKUPS = "Too many order lookups from your connection. Please wait and try again."
NO_CATALOGUE = "There is no demo catalogue here (DEMO_CATALOGUE is off)"


def new_order_id() -> str:
    return "ord_" + secrets.token_urlsafe(16)  # 128 bits: 22 URL-safe characters


# -- what an order may be ---------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    name: str
    quantity: int
    unit_price: int

    @property
    def total(self) -> int:
        return self.quantity * self.unit_price

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "quantity": self.quantity, "unitPrice": self.unit_price, "total": self.total}


@dataclass(frozen=True)
class NewOrder:
    amount: int
    reference: str
    description: str  # "" when none was given
    items: tuple[Line, ...] = ()
    metadata: dict[str, Any] | None = None


def _kes(amount: int) -> str:
    return f"{amount:,}"


def _text(body: Mapping[str, Any], name: str, longest: int, *, required: bool, label: str | None = None) -> str:
    label = label or name
    raw = body.get(name)
    if raw is None and not required:
        return ""
    if not isinstance(raw, str) or not 0 < len(raw.strip()) <= longest:
        need = f"1 to {longest} characters" if required else f"at most {longest} characters"
        raise CheckoutError(f"{label} must be text of {need}", label)
    if not is_clean_text(raw) or not is_visible_text(raw):
        raise CheckoutError(f"{label} has characters that cannot be stored or sent to M-Pesa", label)
    return raw.strip()


def _unknown(body: Mapping[str, Any], allowed: tuple[str, ...], where: str, hint: str) -> None:
    """`where` is "" for the body itself, else the line ("items[2]")."""
    for name in body:
        if name not in allowed:
            shown = name[:40]
            raise CheckoutError(f'{where or "The order"} has an unknown field "{shown}" ({hint})',
                                f"{where}.{shown}" if where else shown)


def _line(raw: Any, where: str, max_amount: int) -> Line:
    if not isinstance(raw, dict):
        raise CheckoutError(f"{where} must be an object with name, quantity and unitPrice", where)
    _unknown(raw, LINE_FIELDS, where, "a line takes name, quantity and unitPrice; the server computes its total")
    name = _text(raw, "name", MAX_NAME, required=True, label=f"{where}.name")
    quantity = whole_number(raw.get("quantity"))
    if quantity is None or not 1 <= quantity <= MAX_QUANTITY:
        raise CheckoutError(f"{where}.quantity must be a whole number from 1 to {_kes(MAX_QUANTITY)}",
                            f"{where}.quantity")
    price = whole_number(raw.get("unitPrice"))
    if price is None or not 1 <= price <= max_amount:
        raise CheckoutError(f"{where}.unitPrice must be a whole number of KES from 1 to {_kes(max_amount)}",
                            f"{where}.unitPrice")
    line = Line(name, quantity, price)
    if line.total > max_amount:
        raise CheckoutError(f"{where} comes to KES {_kes(line.total)}: a line may come to at most KES "
                            f"{_kes(max_amount)}", where)
    return line


def _lines_total(lines: tuple[Line, ...], max_amount: int) -> int:
    amount = sum(line.total for line in lines)
    if amount > max_amount:
        raise CheckoutError(f"The order comes to KES {_kes(amount)}: an order may come to at most KES "
                            f"{_kes(max_amount)}", "items")
    return amount


def _items_list(raw: Any) -> list[Any]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LINES:
        raise CheckoutError(f"items must be a list of 1 to {MAX_LINES} lines", "items")
    return raw


def _metadata(raw: Any) -> dict[str, Any] | None:
    """The shop's own data, kept and shown back as it was sent: a JSON object of at most
    MAX_METADATA_BYTES (as stored) and MAX_METADATA_DEPTH levels, in text that can be stored."""
    if raw is None:
        return None
    message = (f"metadata must be a JSON object of at most {MAX_METADATA_BYTES // 1024} KiB and "
               f"{MAX_METADATA_DEPTH} levels")
    if not isinstance(raw, dict) or _depth(raw) > MAX_METADATA_DEPTH:
        raise CheckoutError(message, "metadata")
    try:
        size = len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): no UTF-8 for it, in keys or values
        raise CheckoutError("metadata has characters that cannot be stored", "metadata") from None
    if size > MAX_METADATA_BYTES:
        raise CheckoutError(message, "metadata")
    return raw


def _depth(value: Any) -> int:
    """How deep a JSON value nests (a scalar: 0), without recursion: the body parser allows far
    deeper nesting than a recursive walk (or json.dumps) could take."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_METADATA_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_order(body: Mapping[str, Any], max_amount: int) -> NewOrder:
    """An order as the shop's backend sends it: `items` (name, quantity, unitPrice) or `amount`,
    a `reference`, optionally a `description` and `metadata`. Raises CheckoutError (message, field)."""
    _unknown(body, ORDER_FIELDS, "", "an order takes items or amount, reference, description and "
                                              "metadata; put your own data in metadata")
    if body.get("currency") not in (None, CURRENCY):
        raise CheckoutError("currency must be KES", "currency")
    has_items, has_amount = body.get("items") is not None, body.get("amount") is not None
    if has_items == has_amount:
        raise CheckoutError("Send items or amount, not both" if has_items else "items or amount is required",
                            "items")
    reference = _text(body, "reference", MAX_REFERENCE, required=True)
    description = _text(body, "description", MAX_DESCRIPTION, required=False)
    metadata = _metadata(body.get("metadata"))
    if has_amount:
        return NewOrder(parse_amount(body["amount"], max_amount), reference, description, (), metadata)
    lines = tuple(_line(raw, f"items[{i}]", max_amount) for i, raw in enumerate(_items_list(body["items"])))
    return NewOrder(_lines_total(lines, max_amount), reference, description, lines, metadata)


def parse_catalogue_order(body: Mapping[str, Any], max_amount: int, reference: str) -> NewOrder:
    """A cart from the demo catalogue: `items` of `id` and `quantity` (0 lines are left out); the
    names and prices are the catalogue's, never the browser's."""
    _unknown(body, ("items",), "", "a catalogue order takes items of id and quantity")
    catalogue = catalogue_by_id()
    lines: list[Line] = []
    seen: set[str] = set()
    for i, raw in enumerate(_items_list(body.get("items"))):
        where = f"items[{i}]"
        if not isinstance(raw, dict):
            raise CheckoutError(f"{where} must be an object with id and quantity", where)
        for name in raw:
            if name in ("unitPrice", "price", "total", "amount", "name"):
                raise CheckoutError(f"{where}.{name}: names and prices come from the catalogue; send only id and "
                                    "quantity", f"{where}.{name}")
        _unknown(raw, ("id", "quantity"), where, "send only id and quantity")
        item_id = raw.get("id")
        item = catalogue.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise CheckoutError(f"{where}.id is not in the catalogue", f"{where}.id")
        if item.id in seen:
            raise CheckoutError(f"{where}.id appears twice: send one line per item", f"{where}.id")
        seen.add(item.id)
        quantity = whole_number(raw.get("quantity"))
        if quantity is None or not 0 <= quantity <= MAX_QUANTITY:
            raise CheckoutError(f"{where}.quantity must be a whole number from 0 to {_kes(MAX_QUANTITY)}",
                                f"{where}.quantity")
        if quantity:
            line = Line(item.name, quantity, item.unit_price)
            if line.total > max_amount:
                raise CheckoutError(f"{where} comes to KES {_kes(line.total)}: a line may come to at most KES "
                                    f"{_kes(max_amount)}", where)
            lines.append(line)
    if not lines:
        raise CheckoutError("Choose at least one item", "items")
    return NewOrder(_lines_total(tuple(lines), max_amount), reference, "", tuple(lines), None)


def demo_reference() -> str:
    return "DEMO-" + "".join(secrets.choice(DEMO_ALPHABET) for _ in range(6))


# -- orders in the store ----------------------------------------------------------------------

@dataclass(frozen=True)
class Order:
    """A row of the `orders` table (items and metadata as stored: JSON text)."""

    order_id: str
    reference: str
    description: str
    amount: int
    items: str
    metadata: str | None
    status: str
    checkout_request_id: str | None
    created_at: str
    updated_at: str
    paid_at: str | None

    @classmethod
    def from_row(cls, row: Row | Mapping[str, Any]) -> Order:
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})

    def lines(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(self.items)
        return items

    def view(self, settings: Settings) -> dict[str, Any]:
        """The order as the shop's backend sees it."""
        return {"success": True, "orderId": self.order_id, "amount": self.amount, "currency": CURRENCY,
                "status": self.status, "reference": self.reference, "description": self.description or None,
                "items": self.lines(), "metadata": json.loads(self.metadata) if self.metadata else None,
                "checkoutUrl": checkout_url(settings, self.order_id), "createdAt": self.created_at,
                "paidAt": self.paid_at, "checkoutRequestId": self.checkout_request_id}

    def checkout_view(self, settings: Settings, payment: Transaction | None) -> dict[str, Any]:
        """The order as its checkout page sees it (no metadata: that is the shop's)."""
        return {"success": True, "orderId": self.order_id, "amount": self.amount, "currency": CURRENCY,
                "reference": self.reference, "description": self.description or None, "items": self.lines(),
                "status": self.status, "businessName": settings.business_name,
                "payment": status_body(payment, detailed=True) if payment is not None else None}


def checkout_url(settings: Settings, order_id: str) -> str:
    return f"{settings.frontend_url}/pay.html?orderId={order_id}"


async def insert_order(store: TransactionStore, new: NewOrder) -> Order:
    now = utc_now()
    order = Order(order_id=new_order_id(), reference=new.reference, description=new.description,
                  amount=new.amount, items=json.dumps([line.to_json() for line in new.items]),
                  metadata=json.dumps(new.metadata, separators=(",", ":")) if new.metadata is not None else None,
                  status="open", checkout_request_id=None, created_at=now, updated_at=now, paid_at=None)
    row = dataclasses.asdict(order)
    async with store.transaction() as t:
        await t.execute(f"INSERT INTO orders ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                        list(row.values()))
    log.info("order %s created: KES %d, reference %s", order.order_id, order.amount, order.reference)
    return order


async def load_order(store: TransactionStore | StoreTransaction, order_id: str) -> Order | None:
    if not ORDER_ID.fullmatch(order_id):
        return None
    row = await store.fetch_one("SELECT * FROM orders WHERE order_id = ?", (order_id,))
    return Order.from_row(row) if row is not None else None


async def order_payments(store: TransactionStore, order_id: str) -> list[Transaction]:
    """The order's payments, newest first."""
    rows = await store.fetch_all("SELECT checkout_request_id FROM transactions WHERE order_id = ? "
                                 "ORDER BY created_at DESC, rowid DESC", (order_id,))
    found = [await store.get(row[0]) for row in rows]
    return [tx for tx in found if tx is not None]


async def shown_payment(store: TransactionStore, order: Order) -> Transaction | None:
    """The payment a checkout page follows: the one that paid the order, else the newest."""
    if order.checkout_request_id is not None:
        paid_by = await store.get(order.checkout_request_id)
        if paid_by is not None:
            return paid_by
    row = await store.fetch_one("SELECT checkout_request_id FROM transactions WHERE order_id = ? "
                                "ORDER BY created_at DESC, rowid DESC LIMIT 1", (order.order_id,))
    return await store.get(row[0]) if row is not None else None


UNCONFIRMED = {
    "sending": "Being sent to M-Pesa",
    "unknown": "M-Pesa's answer to this push was lost: the customer may have been prompted, and if they pay, "
               "the payment appears under payments",
}


async def unconfirmed_pushes(store: TransactionStore, order_id: str) -> list[dict[str, Any]]:
    """The order's pushes that are not (yet) payments: under way, or whose answer was lost (the
    prompt may be on the phone; a callback adopted later makes it a payment). Newest first."""
    rows = await store.fetch_all("SELECT state, amount, phone, created_at FROM push_attempts WHERE order_id = ? AND "
                                 "state IN ('sending', 'unknown') ORDER BY created_epoch DESC, id DESC", (order_id,))
    return [{"state": row["state"], "amount": row["amount"], "phoneMasked": mask_phone(row["phone"]),
             "message": UNCONFIRMED[row["state"]], "createdAt": row["created_at"]} for row in rows]


def payment_view(tx: Transaction) -> dict[str, Any]:
    return {"checkoutRequestId": tx.checkout_request_id, "status": tx.status, "amount": tx.amount,
            "receipt": tx.receipt, "resultCode": tx.result_code, "message": status_body(tx)["message"],
            "late": tx.late, "createdAt": tx.created_at, "settledAt": tx.settled_at}


# -- a payment that completes pays its order --------------------------------------------------

async def mark_order_paid(t: StoreTransaction, tx: Transaction, previous_status: str | None) -> None:
    """The "payment" listener: inside the transaction that completes `tx`, its order becomes paid."""
    if tx.order_id is None or tx.status != "completed":
        return
    row = await t.fetch_one("SELECT * FROM orders WHERE order_id = ?", (tx.order_id,))
    if row is None:
        log.error("payment %s completed for order %s, which does not exist", tx.checkout_request_id, tx.order_id)
        return
    order = Order.from_row(row)
    if order.status == "paid":
        if order.checkout_request_id != tx.checkout_request_id:
            log.warning("DOUBLE PAYMENT: order %s was already paid by %s; payment %s (KES %d, receipt %s) completed "
                        "too: both payments are kept, the order is unchanged", order.order_id,
                        order.checkout_request_id, tx.checkout_request_id, tx.amount, tx.receipt or "to follow")
        return
    if tx.amount != order.amount:
        log.error("payment %s of KES %d completed for order %s of KES %d: the order stays open",
                  tx.checkout_request_id, tx.amount, order.order_id, order.amount)
        return
    now = utc_now()
    changed, _ = await t.execute(
        "UPDATE orders SET status = 'paid', checkout_request_id = ?, paid_at = ?, updated_at = ? "
        "WHERE order_id = ? AND status = 'open'", (tx.checkout_request_id, now, now, order.order_id))
    if changed != 1:
        return
    paid = await t.fetch_one("SELECT * FROM orders WHERE order_id = ?", (order.order_id,))
    log.info("order %s paid by %s%s", order.order_id, tx.checkout_request_id, " (late)" if tx.late else "")
    await t.notify("order", dict(paid) if paid is not None else {}, order.status)


# -- the shop's API (API key) -----------------------------------------------------------------

def _bearer(request: web.Request) -> bytes:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip().encode("utf-8", "surrogateescape") if scheme.lower() == "bearer" else b""


def authorized(request: web.Request) -> web.Response | None:
    """None when the request carries SHOP_API_KEY; else the answer (503 without a key set, 401)."""
    key = request.app[SETTINGS].shop_api_key
    if not key:
        return failure(NO_KEY, 503)
    if not hmac.compare_digest(_bearer(request), key.encode()):
        return failure(BAD_KEY, 401, headers={"WWW-Authenticate": 'Bearer realm="orders"'})
    return None


def shop(request: web.Request) -> str | None:
    """The idempotency scope's "who" of the shop's calls: its API key's hash (None: not authorized)."""
    if authorized(request) is not None:
        return None
    return "key:" + hashlib.sha256(request.app[SETTINGS].shop_api_key.encode()).hexdigest()[:32]


async def create_order(request: web.Request) -> web.Response:
    refused = authorized(request)
    if refused is not None:
        return refused
    settings = request.app[SETTINGS]
    body = await read_json_object(request)
    try:
        new = parse_order(body, settings.max_amount)
    except CheckoutError as exc:
        return failure(exc.message, 400, field=exc.field)
    order = await insert_order(request.app[PAYMENTS].store, new)
    return web.json_response(order.view(settings), status=201)


async def get_order(request: web.Request) -> web.Response:
    refused = authorized(request)
    if refused is not None:
        return refused
    store = request.app[PAYMENTS].store
    order = await load_order(store, request.match_info["order_id"])
    if order is None:
        return failure(NOT_FOUND, 404)
    payments = [payment_view(tx) for tx in await order_payments(store, order.order_id)]
    return web.json_response({**order.view(request.app[SETTINGS]), "payments": payments,
                              "unconfirmedPushes": await unconfirmed_pushes(store, order.order_id)})


# -- the checkout's view (the orderId is the capability) ---------------------------------------

async def find_order(request: web.Request, order_id: str) -> Order:
    """An order by id, for a browser: 404 if there is none, and a client that keeps asking about
    ids that do not exist is stopped for a while (429), as with payment ids."""
    try:
        order = await limited_lookup(request, lambda: load_order(request.app[PAYMENTS].store, order_id.strip()))
    except LookupLimited as exc:
        # Lookups still under way count too, so a crowd of requests at once from one address can
        # reach this with ids that exist: the message does not say they do not.
        raise too_many(TOO_MANY_LOOKUPS, exc.retry_after) from None
    if order is None:
        raise BadRequest(NOT_FOUND, 404)
    return order


async def checkout_order(request: web.Request) -> web.Response:
    order = await find_order(request, request.match_info["order_id"])
    payment = await shown_payment(request.app[PAYMENTS].store, order)
    return web.json_response(order.checkout_view(request.app[SETTINGS], payment))


async def checkout_status(request: web.Request) -> web.Response:
    """The status of the payment the order's checkout follows (detailed), or `"status": "none"`."""
    order = await find_order(request, request.match_info["order_id"])
    payment = await shown_payment(request.app[PAYMENTS].store, order)
    if payment is None:
        return web.json_response({"success": True, "status": "none", "orderId": order.order_id,
                                  "orderStatus": order.status, "message": "No payment has been started for this order"})
    return web.json_response({**status_body(payment, detailed=True), "orderId": order.order_id,
                              "orderStatus": order.status})


async def checkout_events(request: web.Request) -> web.StreamResponse:
    """Live updates of the payment the order's checkout follows, as /stkpush/{id}/events sends them;
    with no payment yet, one `status` event `{"status": "none"}` and the end of the stream."""
    order = await find_order(request, request.match_info["order_id"])
    payment = await shown_payment(request.app[PAYMENTS].store, order)
    if payment is not None:
        return await stream_payment(request, payment, detailed=True)
    with request.app[STREAM_LIMITS].hold(client_address(request)) as allowed:
        if not allowed:
            raise too_many("Too many live updates open. Please close other checkout tabs; this page will "
                           "check by polling.", 10)
        async with sse_response(request) as stream:
            with contextlib.suppress(ConnectionResetError):
                await stream.send(json.dumps({"success": True, "status": "none", "orderId": order.order_id,
                                              "orderStatus": order.status}), event="status")
            return stream


@contextlib.asynccontextmanager
async def order_checkout(request: web.Request, body: Mapping[str, Any]) -> AsyncIterator[Checkout]:
    """The push for an order (`POST /stkpush {"orderId", "phone"}`): its amount, reference and
    description are the order's. Raises BadRequest: 404 unknown order, 400 an amount that is not the
    order's, 409 a paid order or one whose payment is still open. Held while the push is made, so
    that two pushes for one order are never under way at once."""
    raw_id = body.get("orderId")
    if not isinstance(raw_id, str) or not raw_id.strip():
        raise BadRequest("orderId must be an order's id (ord_…)", field="orderId")
    order = await find_order(request, raw_id)
    if body.get("amount") is not None and whole_number(body["amount"]) != order.amount:
        raise BadRequest("The order sets the amount", field="amount")
    try:
        phone = normalise_phone(body.get("phone"))
    except CheckoutError as exc:
        raise BadRequest(exc.message, field=exc.field) from None
    settings = request.app[SETTINGS]
    store = request.app[PAYMENTS].store
    payments = request.app[PAYMENTS]
    async with request.app[ORDER_PUSHES].hold(order.order_id, payments.leases, payments.answer_deadline()):
        now = request.app[PAYMENTS].clock()
        # One consistent view (the writer's transaction, nothing written): the order, its open
        # payment and its lost pushes read as of one moment. Read one by one, a payment completing
        # in between showed an open order with no payment waiting, and a second prompt went out.
        async with store.transaction() as t:
            current = await load_order(t, order.order_id)
            pending = await t.fetch_one("SELECT checkout_request_id FROM transactions WHERE order_id = ? AND "
                                        "status = 'pending' ORDER BY created_at DESC LIMIT 1", (order.order_id,))
            unconfirmed = await t.fetch_one(
                "SELECT MAX(created_epoch) FROM push_attempts WHERE order_id = ? AND state IN ('sending', 'unknown') "
                "AND created_epoch > ?", (order.order_id, now - settings.payment_timeout))
        assert current is not None
        if current.status == "paid":
            raise BadRequest("This order is already paid", 409, orderStatus="paid",
                             checkoutRequestId=current.checkout_request_id)
        if pending is not None:
            raise BadRequest("A payment for this order is waiting on the phone", 409, orderStatus="open",
                             checkoutRequestId=pending[0])
        if unconfirmed is not None and unconfirmed[0] is not None:
            # M-Pesa's answer to the last push was lost: its prompt may be on the phone, and a second
            # push could be paid as well. No new push until that prompt can no longer be paid.
            wait = retry_after_seconds(unconfirmed[0] + settings.payment_timeout - now)
            raise BadRequest("The last payment request may still be on the phone: if it is, enter your M-Pesa PIN "
                             "there. Otherwise you can try again when the wait is over.", 409,
                             headers={"Retry-After": str(wait)}, orderStatus="open", retryAfterSeconds=wait)
        yield Checkout(phone=phone, amount=current.amount,
                       account_reference=trim(current.reference, ACCOUNT_REFERENCE_MAX) or "Payment",
                       description=trim(current.description or settings.business_name, TRANSACTION_DESC_MAX)
                       or "Payment", order_id=current.order_id)


class OrderPushes:
    """One push at a time per order: in this process (a lock per order), and with `leases` (several
    processes on one database) in all of them (a lease per order, given up when the push is over)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, order_id: str, leases: Leases | None = None, seconds: float = 60.0) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(order_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                if leases is None:
                    yield
                    return
                if not await leases.hold("order-push", order_id, seconds, wait=seconds):
                    raise BadRequest("A payment request for this order is being sent. Please wait a moment.", 409,
                                     headers={"Retry-After": "5"}, orderStatus="open", retryAfterSeconds=5)
                try:
                    yield
                finally:
                    await leases.release("order-push", order_id)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[order_id]


ORDER_PUSHES: web.AppKey[OrderPushes] = web.AppKey("order_pushes", OrderPushes)
CATALOGUE_LIMITER: web.AppKey[Limiter] = web.AppKey("catalogue_limiter")


# -- the demo catalogue ------------------------------------------------------------------------

def _catalogue_on(request: web.Request) -> None:
    if not request.app[SETTINGS].demo_catalogue:
        raise BadRequest(NO_CATALOGUE, 404)


async def catalogue(request: web.Request) -> web.Response:
    _catalogue_on(request)
    settings = request.app[SETTINGS]
    return web.json_response({"success": True, "currency": CURRENCY, "maxQuantity": MAX_QUANTITY,
                              "maxAmount": settings.max_amount, "items": [i.to_json() for i in load_catalogue()]})


async def catalogue_order(request: web.Request) -> web.Response:
    """An order from the demo catalogue, for the pay page (no API key; limited per client)."""
    _catalogue_on(request)
    settings = request.app[SETTINGS]
    body = await read_json_object(request)
    try:
        new = parse_catalogue_order(body, settings.max_amount, demo_reference())
    except CheckoutError as exc:
        return failure(exc.message, 400, field=exc.field)
    wait = await request.app[CATALOGUE_LIMITER].take(client_address(request))
    if wait:
        raise too_many("Too many orders from your connection. Please wait a few minutes and try again.", wait)
    order = await insert_order(request.app[PAYMENTS].store, new)
    return web.json_response(order.view(settings), status=201)


# -- installing it -----------------------------------------------------------------------------

async def orders_ctx(app: web.Application) -> AsyncIterator[None]:
    """Registers the listener that pays orders, right after the store opens (create_app appends this
    just after the payments' context, before the reconciler's first pass can complete anything)."""
    app[PAYMENTS].store.listen("payment", mark_order_paid)
    yield


def install_orders(app: web.Application) -> list[web.AbstractRoute]:
    """Add the orders API, idempotency and (in simulator mode) the demo catalogue to the gateway.
    Returns the routes a browser calls (the checkout and the catalogue), for CORS."""
    settings = app[SETTINGS]
    app[ORDER_PUSHES] = OrderPushes()
    app[CATALOGUE_LIMITER] = limiter_for(app, "catalogue", settings.push_limit_per_client, settings.push_limit_window)
    app.cleanup_ctx.append(orders_ctx)
    app.router.add_post("/orders", create_order)
    app.router.add_get("/orders/{order_id}", get_order)
    browser = [
        app.router.add_get("/checkout/{order_id}", checkout_order),
        app.router.add_post("/checkout/{order_id}/status", checkout_status),
        app.router.add_get("/checkout/{order_id}/events", checkout_events),
        app.router.add_get("/catalogue", catalogue),
        app.router.add_post("/catalogue/orders", catalogue_order),
    ]
    who: dict[str, Callable[[web.Request], str | None]] = {
        "/stkpush": public, "/orders": shop, "/catalogue/orders": public}
    for path, scope in who.items():
        protect(app, "POST", path, scope)
    if settings.demo_catalogue:
        load_catalogue()  # a broken catalogue file stops the start, not a customer's order
    return browser
