"""The Daraja client: configured once with a base URL and credentials, the only thing that
differs between the simulator, Safaricom's sandbox and production."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from .errors import (
    AuthRefused,
    DarajaError,
    DarajaUnavailable,
    InvalidField,
    InvalidToken,
    MerchantDoesNotExist,
    RateLimited,
    StillProcessing,
    SubscriberLocked,
    SystemBusy,
    WrongCredentials,
)
from .wire import code_str, nairobi_timestamp, parse_expires_in, stk_password

log = logging.getLogger(__name__)

OAUTH_PATH = "/oauth/v1/generate?grant_type=client_credentials"
STK_PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
STK_QUERY_PATH = "/mpesa/stkpushquery/v1/query"


class TokenSource(Protocol):
    """Where tokens come from when several processes share one (the gateway's database)."""

    async def get(self, fetch: Callable[[], Awaitable[tuple[str, int]]], *, max_margin: float,
                  refused: str | None = None) -> tuple[str, float, float]: ...


class TokenCache:
    """One OAuth token, refreshed before it expires; concurrent callers share one refresh. With a
    `source`, the token is shared with other processes too: a refresh asks the source, which hands
    out the token another process stored or has one process fetch it."""

    def __init__(self, fetch: Callable[[], Awaitable[tuple[str, int]]], *,
                 clock: Callable[[], float] = time.monotonic, max_margin: float = 300.0,
                 source: TokenSource | None = None) -> None:
        self._fetch = fetch
        self._clock = clock
        self._max_margin = max_margin
        self.source = source
        self._token: str | None = None
        self._refused: str | None = None
        self._refresh_at = 0.0
        self._inflight: asyncio.Future[str] | None = None
        self.fetches = 0

    async def get(self) -> str:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._refresh())
        # shield: one caller giving up must not cancel the refresh the others are waiting on
        return await asyncio.shield(self._inflight)

    def invalidate(self, token: str) -> None:
        """Forget `token` if it is still the current one (another caller may have replaced it)."""
        if token == self._token:
            self._token = None
            self._refused = token

    async def _refresh(self) -> str:
        try:
            if self.source is not None:
                token, left, lifetime = await self.source.get(self._counted_fetch, max_margin=self._max_margin,
                                                              refused=self._refused)
            else:
                token, lifetime = await self._counted_fetch()
                left = lifetime
            # Refresh a few minutes early (a fifth of the lifetime for short-lived tokens).
            margin = min(self._max_margin, lifetime / 5)
            self._token, self._refresh_at = token, self._clock() + left - margin
            return token
        finally:
            self._inflight = None

    async def _counted_fetch(self) -> tuple[str, int]:
        self.fetches += 1
        return await self._fetch()


@dataclass(frozen=True)
class StkPushRequest:
    phone: str  # 2547XXXXXXXX / 2541XXXXXXXX
    amount: int
    account_reference: str
    description: str
    callback_url: str


@dataclass(frozen=True)
class StkPushAccepted:
    merchant_request_id: str
    checkout_request_id: str
    customer_message: str


@dataclass(frozen=True)
class StkQueryResult:
    """`pending` (Daraja still waits for the customer) or `settled` with the ResultCode."""

    pending: bool
    result_code: str | None = None
    result_desc: str = ""


class DarajaClient:
    def __init__(self, session: aiohttp.ClientSession, *, base_url: str, consumer_key: str,
                 consumer_secret: str, shortcode: str, passkey: str,
                 transaction_type: str = "CustomerPayBillOnline", party_b: str | None = None,
                 timeout: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        credentials = base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode("ascii")
        self._basic_auth = {"Authorization": f"Basic {credentials}"}
        self._shortcode = shortcode
        self._passkey = passkey
        self._transaction_type = transaction_type
        self._party_b = party_b or shortcode
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.tokens = TokenCache(self._fetch_token, clock=clock)
        # Told of every call: (call, seconds, Daraja's errorCode or "unavailable" or None, and for
        # a query "pending"/"settled"/the error). The gateway's metrics listen here.
        self.observer: Callable[[str, float, str | None, str | None], None] | None = None

    async def stk_push(self, req: StkPushRequest) -> StkPushAccepted:
        timestamp = nairobi_timestamp()
        body = {
            "BusinessShortCode": self._shortcode,
            "Password": stk_password(self._shortcode, self._passkey, timestamp),
            "Timestamp": timestamp,
            "TransactionType": self._transaction_type,
            "Amount": req.amount,
            "PartyA": req.phone,
            "PartyB": self._party_b,
            "PhoneNumber": req.phone,
            "CallBackURL": req.callback_url,
            "AccountReference": req.account_reference,
            "TransactionDesc": req.description,
        }
        status, data = await self._post(STK_PUSH_PATH, body, sends_payment=True)
        if status != 200 or code_str_or_none(data.get("ResponseCode")) != "0":
            raise parse_error(status, data, maybe_sent=True)
        try:
            return StkPushAccepted(
                merchant_request_id=str(data["MerchantRequestID"]),
                checkout_request_id=str(data["CheckoutRequestID"]),
                customer_message=str(data.get("CustomerMessage", "")),
            )
        except KeyError as missing:
            raise DarajaUnavailable(f"STK push answer lacks {missing}", maybe_sent=True) from None

    async def stk_query(self, checkout_request_id: str) -> StkQueryResult:
        timestamp = nairobi_timestamp()
        body = {
            "BusinessShortCode": self._shortcode,
            "Password": stk_password(self._shortcode, self._passkey, timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_request_id,
        }
        status, data = await self._post(STK_QUERY_PATH, body)
        echoed = data.get("CheckoutRequestID")
        if status == 200 and echoed is not None and echoed != checkout_request_id:
            # An answer about another payment must never settle this one.
            raise DarajaUnavailable("STK query answered about a different CheckoutRequestID")
        if status == 200 and code_str_or_none(data.get("ResponseCode")) == "0" and "ResultCode" in data:
            result_code = code_str_or_none(data.get("ResultCode"))
            desc = str(data.get("ResultDesc", ""))
            if result_code is None:
                raise DarajaUnavailable("STK query answer has no usable ResultCode")
            if result_code == "4999":  # 2025+ form of "still under processing"
                return StkQueryResult(pending=True, result_desc=desc)
            return StkQueryResult(pending=False, result_code=result_code, result_desc=desc)
        error = parse_error(status, data)
        if isinstance(error, StillProcessing):  # older form: HTTP 500 "The transaction is being processed"
            return StkQueryResult(pending=True, result_desc=error.error_message)
        raise error

    async def _post(self, path: str, body: dict[str, Any], *,
                    sends_payment: bool = False) -> tuple[int, dict[str, Any]]:
        token = await self.tokens.get()
        status, data = await self._request("POST", path, json=body, headers={"Authorization": f"Bearer {token}"},
                                           sends_payment=sends_payment)
        if status != 200 and isinstance(parse_error(status, data), InvalidToken):
            # Expired or revoked before we expected: refresh once and retry once. (Daraja refused
            # the first attempt outright, so the retry cannot make a second prompt.)
            self.tokens.invalidate(token)
            token = await self.tokens.get()
            status, data = await self._request("POST", path, json=body, headers={"Authorization": f"Bearer {token}"},
                                               sends_payment=sends_payment)
        return status, data

    async def _fetch_token(self) -> tuple[str, int]:
        status, data = await self._request("GET", OAUTH_PATH, headers=self._basic_auth)
        if status == 200 and isinstance(data.get("access_token"), str):
            try:
                return data["access_token"], parse_expires_in(data.get("expires_in", 3599))
            except ValueError:
                raise DarajaUnavailable("OAuth answer has an unusable expires_in") from None
        raise parse_error(status, data, oauth=True)

    async def _request(self, method: str, path: str, *, sends_payment: bool = False,
                       **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """One call. With `sends_payment`, failures after the request may have gone out say so."""
        url = self._base_url + path
        started = time.perf_counter()
        try:
            status, data = await self._exchange(method, url, path, sends_payment, kwargs)
        except DarajaUnavailable:
            self._observe(path, started, "unavailable", None)
            raise
        error = _error_code(status, data)
        self._observe(path, started, error, _query_result(status, data, error) if path == STK_QUERY_PATH else None)
        return status, data

    def _observe(self, path: str, started: float, error: str | None, query: str | None) -> None:
        if self.observer is not None:
            call = CALLS.get(path.split("?")[0], path)
            self.observer(call, time.perf_counter() - started, error, query or (error if call == "stkquery" else None))

    async def _exchange(self, method: str, url: str, path: str, sends_payment: bool,
                        kwargs: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            async with self._session.request(method, url, timeout=self._timeout, **kwargs) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError:
            raise DarajaUnavailable(f"Daraja did not answer {path.split('?')[0]} in time",
                                    maybe_sent=sends_payment) from None
        except aiohttp.ClientConnectorError as exc:  # no connection: nothing was sent
            raise DarajaUnavailable(f"Daraja could not be reached ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise DarajaUnavailable(f"Daraja could not be reached ({type(exc).__name__})",
                                    maybe_sent=sends_payment) from None
        if not raw.strip():
            return status, {}
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise DarajaUnavailable(f"Daraja answered HTTP {status} with a body that is not JSON",
                                    maybe_sent=sends_payment) from None
        if not isinstance(data, dict):
            raise DarajaUnavailable(f"Daraja answered HTTP {status} with JSON that is not an object",
                                    maybe_sent=sends_payment)
        return status, data


CALLS = {OAUTH_PATH.split("?")[0]: "oauth", STK_PUSH_PATH: "stkpush", STK_QUERY_PATH: "stkquery"}


def _error_code(status: int, data: dict[str, Any]) -> str | None:
    """Daraja's errorCode of an answer that is an error (or its HTTP status), else None."""
    if status == 200:
        code = code_str_or_none(data.get("ResponseCode"))
        return None if code in (None, "0") else f"ResponseCode {code}"
    given = data.get("errorCode")
    return str(given)[:40] if isinstance(given, (str, int)) else f"HTTP {status}"


def _query_result(status: int, data: dict[str, Any], error: str | None) -> str | None:
    if error is None and "ResultCode" in data:
        return "pending" if code_str_or_none(data.get("ResultCode")) == "4999" else "settled"
    return "pending" if error == "500.001.1001" else error


def code_str_or_none(value: Any) -> str | None:
    try:
        return code_str(value)
    except ValueError:
        return None


# 400.002.02 "Bad Request - Invalid <Field>": the last word names the field.
_INVALID_FIELD = re.compile(r"Invalid\s+(\w+)\s*$")
# Apigee, in front of Daraja, answers its own policies' faults in its own shape.
_APIGEE_RATE_LIMIT = "policies.ratelimit."

_LOCK_KINDS: tuple[tuple[str, type[DarajaError]], ...] = (  # 500.001.1001, told apart by its text
    ("unable to lock subscriber", SubscriberLocked),
    ("being processed", StillProcessing),
    ("wrong credentials", WrongCredentials),
    ("merchant does not exist", MerchantDoesNotExist),
)


def parse_error(status: int, data: dict[str, Any], *, maybe_sent: bool = False,
                oauth: bool = False) -> DarajaError | DarajaUnavailable:
    """What Daraja answered instead of success, as a typed exception (returned, for the caller to
    raise): the one place that reads `errorCode` and `errorMessage` to decide the kind.

    Reads Daraja's envelope (`requestId`, `errorCode`, `errorMessage`), the Ethiopia-style
    `resultCode/resultDesc`, a non-zero `ResponseCode`, and Apigee's
    `{"fault": {"faultstring", "detail": {"errorcode"}}}`. An answer with nothing of Daraja's in it
    is `DarajaUnavailable` at HTTP 5xx (with `maybe_sent`: the request may have been acted on),
    and a `DarajaError` saying so below that. From OAuth (`oauth`), every refusal other than a
    rate limit is `AuthRefused`."""
    fault = data.get("fault")
    if isinstance(fault, dict):
        detail = fault.get("detail")
        code = str(detail.get("errorcode") or "") if isinstance(detail, dict) else ""
        message = str(fault.get("faultstring") or "")
        if code.startswith(_APIGEE_RATE_LIMIT) or status == 429:
            return RateLimited(status, code, message)
        if status >= 500:  # e.g. Apigee's gateway time-out: Daraja itself may have had the request
            return DarajaUnavailable(f"Daraja's gateway answered HTTP {status} ({code or 'fault'})",
                                     maybe_sent=maybe_sent)
        request_id = ""
    else:
        code = str(data.get("errorCode") or data.get("resultCode") or data.get("ResponseCode") or "")
        message = str(data.get("errorMessage") or data.get("resultDesc") or data.get("ResponseDescription") or "")
        request_id = str(data.get("requestId") or "")
    if not code and not message:
        if status >= 500:
            return DarajaUnavailable(f"Daraja answered HTTP {status}", maybe_sent=maybe_sent)
        if oauth and status == 400 and not data:
            message = "Daraja refused the consumer key or secret (HTTP 400, empty body)"
        else:
            message = f"HTTP {status} with no error body"
    kind = _kind(status, code, message)
    if oauth and kind not in (RateLimited, SystemBusy):
        kind = AuthRefused
    if kind is InvalidField:
        field = _INVALID_FIELD.search(message)
        assert field is not None  # _kind checked it
        return InvalidField(status, code, message, request_id, field=field.group(1))
    return kind(status, code, message, request_id)


def _kind(status: int, code: str, message: str) -> type[DarajaError]:
    text = message.lower()
    if code == "404.001.03":
        return InvalidToken
    if code == "500.001.1001":
        for words, kind in _LOCK_KINDS:
            if words in text:
                return kind
        return DarajaError
    if code == "500.003.02" and "system is busy" in text:
        return SystemBusy
    if code in ("500.003.02", "500.003.03") or status == 429:
        return RateLimited
    if code == "400.002.02" and _INVALID_FIELD.search(message):
        return InvalidField
    return DarajaError
