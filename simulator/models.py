"""The simulated Daraja and the customers' handsets as plain objects: no HTTP in here.

`SimulatedDaraja` holds merchants, tokens, subscribers and prompts, and the rules that move a
prompt from open to settled. Time comes from an injectable clock and every public method first
catches up with it, so a test can drive the whole world synchronously.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import hmac
import re
import itertools
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable
from urllib.parse import urlsplit

from faker import Faker


from .exceptions import (BadClientCredentials, InternalServerError, InvalidAccessToken, InvalidField,
                         MerchantDoesNotExist, QuotaViolation, SpikeArrestViolation, SubscriberLocked, SystemBusy,
                         WrongCredentials)
from .journal import Journal
from .result_codes import callback_desc
from .ids import DarajaIds
from .phones import msisdn as safaricom_msisdn
from .scenarios import Scenario, interactive
from .settings import SimulatorSettings
from .wire import daraja_timestamp, failed_callback, nairobi_time, paid_callback, password_matches, read_timestamp

TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
MAX_AMOUNT = 250_000  # Safaricom's per-transaction maximum (2025 FAQ)
MAX_SETTLED_PROMPTS = 20_000  # the oldest settled prompts are forgotten past this (long load tests)


@dataclass
class Subscriber:
    msisdn: str
    name: str
    balance: int  # KES

    def to_json(self) -> dict[str, Any]:
        return {"msisdn": self.msisdn, "name": self.name, "balance": self.balance}


@dataclass
class CallbackAttempt:
    at: float
    url: str
    body: dict[str, Any]
    status: int | None = None
    error: str | None = None
    duration_ms: float | None = None
    attempt: int = 1
    journal_id: int | None = None  # resend with POST /simulator/api/callbacks/{journal_id}/resend

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "url": self.url, "status": self.status, "error": self.error,
                "durationMs": self.duration_ms, "body": self.body, "attempt": self.attempt,
                "journalId": self.journal_id}


@dataclass
class CallbackJob:
    due_at: float
    checkout_request_id: str
    url: str
    body: dict[str, Any]
    attempt: int = 1
    generation: int = 0  # the simulator's reset count when it was scheduled


@dataclass
class Prompt:
    checkout_request_id: str
    merchant_request_id: str
    msisdn: str
    amount: int
    shortcode: str
    party_b: str
    transaction_type: str
    account_reference: str
    description: str
    callback_url: str
    created_at: float
    expires_at: float
    scenario: Scenario | None
    answer_at: float | None = None  # when a scripted outcome happens
    state: str = "open"  # open | settled
    result_code: str | None = None
    result_desc: str | None = None
    receipt: str | None = None
    transaction_date: str | None = None
    balance_after: int | None = None
    settled_at: float | None = None
    callbacks: list[CallbackAttempt] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.state == "open"

    def prompt_text(self, business_name: str) -> str:
        return f"Do you want to pay Ksh {self.amount:,} to {business_name}? Enter M-PESA PIN"

    def sms_text(self, business_name: str) -> str | None:
        """M-Pesa's confirmation SMS, in its usual wording for a paybill or a till."""
        if self.receipt is None or self.settled_at is None:
            return None
        moment = nairobi_time(self.settled_at)
        when = f"{moment:%d/%m/%y} at {moment.strftime('%I:%M %p').lstrip('0')}"
        balance = f"Ksh{self.balance_after or 0:,.2f}"
        if self.transaction_type == "CustomerBuyGoodsOnline":
            paid = f"Ksh{self.amount:,.2f} paid to {business_name}."
        else:
            paid = f"Ksh{self.amount:,.2f} sent to {business_name} for account {self.account_reference}"
        return (f"{self.receipt} Confirmed. {paid} on {when}. New M-PESA balance is {balance}. "
                "Transaction cost, Ksh0.00.")

    def to_json(self, now: float, business_name: str = "") -> dict[str, Any]:
        return {
            "checkoutRequestId": self.checkout_request_id,
            "merchantRequestId": self.merchant_request_id,
            "msisdn": self.msisdn,
            "amount": self.amount,
            "shortcode": self.shortcode,
            "partyB": self.party_b,
            "transactionType": self.transaction_type,
            "accountReference": self.account_reference,
            "description": self.description,
            "state": self.state,
            "scenario": self.scenario.title if self.scenario else None,
            "createdAt": self.created_at,
            "settledAt": self.settled_at,
            "now": now,
            "expiresAt": self.expires_at,
            "secondsLeft": max(0.0, round(self.expires_at - now, 1)) if self.open else 0.0,
            "resultCode": self.result_code,
            "resultDesc": self.result_desc,
            "receipt": self.receipt,
            "transactionDate": self.transaction_date,
            "balanceAfter": self.balance_after,
            "promptText": self.prompt_text(business_name),
            "smsText": self.sms_text(business_name),
            "callbacks": [c.to_json() for c in self.callbacks],
        }


@dataclass(frozen=True)
class PushOrder:
    """An STK push whose fields passed Daraja's checks, in canonical string form."""

    shortcode: str
    password: str
    timestamp: str
    transaction_type: str
    amount: int
    party_a: str
    party_b: str
    phone: str
    callback_url: str
    account_reference: str
    description: str


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdecimal()


def _digits(value: Any, lo: int, hi: int) -> str | None:
    """A number or numeric string of lo..hi digits, as Daraja accepts both."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and _ascii_digits(value.strip()) and lo <= len(value.strip()) <= hi:
        return value.strip()
    return None


def _msisdn(value: Any) -> str | None:
    text = _digits(value, 12, 12)
    return safaricom_msisdn(text)


_AMOUNT_TEXT = re.compile(r"[0-9]+(?:\.0+)?")


def _amount(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not _AMOUNT_TEXT.fullmatch(value.strip()):  # no "1e2", "+7", "1_000" or non-ASCII digits
            return None
        value = float(value.strip())
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int) and 1 <= value <= MAX_AMOUNT:
        return value
    return None


def _timestamp(value: Any) -> str | None:
    text = _digits(value, 14, 14)
    if text is None:
        return None
    return text if read_timestamp(text) is not None else None


def _callback_url(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 500:
        return None
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        return None
    return value.strip() if parts.scheme in ("http", "https") and parts.hostname else None


class SimulatedDaraja:
    def __init__(self, settings: SimulatorSettings, *, consumer_key: str, consumer_secret: str,
                 merchants: dict[str, str], catalogue: dict[str, Scenario], business_name: str = "Demo Shop",
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.business_name = business_name
        self.merchants = dict(merchants)
        self.catalogue = catalogue
        self._consumer_key = consumer_key
        self._consumer_secret = consumer_secret
        self._wall_clock = clock
        self.clock_offset = 0.0  # moved by advance_clock(), so tests need not wait
        self._rng = rng or random.SystemRandom()
        self._faker = Faker("en_KE")
        self.tokens: dict[str, float] = {}  # token -> expires at
        self.tokens_issued = 0
        self.subscribers: dict[str, Subscriber] = {}
        self.prompts: dict[str, Prompt] = {}
        self._receipts: set[str] = set()
        # Min-heaps, so that catching up with the clock costs O(log n) however many prompts are open.
        self._deadlines: list[tuple[float, str]] = []  # (answer or expiry time, CheckoutRequestID)
        self._callback_jobs: list[tuple[float, int, CallbackJob]] = []
        self._job_seq = itertools.count()
        self._open_by_msisdn: dict[str, int] = {}  # how many open prompts each number has
        self._ids = DarajaIds(self._rng)
        self.listeners: list[Callable[[], None]] = []  # told after every change (runner, live pages)
        self.tills = settings.all_tills  # till -> store shortcode
        self.journal = Journal(secrets=[consumer_secret, *merchants.values()])
        self.subscriber_faults: dict[str, dict[str, Any]] = {}
        self.pending_faults: list[dict[str, Any]] = []  # {"remaining": n, "msisdn": … or None, "behaviour": {…}}
        self._recent_requests: list[float] = []
        self.requests_counted = 0
        self.generation = 0

    def clock(self) -> float:
        return self._wall_clock() + self.clock_offset

    def advance_clock(self, seconds: float) -> float:
        """Move the simulator's time forward: tokens and prompts expire as if that time had passed."""
        self.clock_offset += seconds
        now = self.catch_up()
        self._changed()
        return now

    def reset(self) -> None:
        """Forget everything that happened: prompts, tokens, customers, faults, journal, time moved."""
        self.tokens.clear()
        self.subscribers.clear()
        self.prompts.clear()
        self._receipts.clear()
        self._deadlines.clear()
        self._callback_jobs.clear()
        self._open_by_msisdn.clear()
        self.subscriber_faults.clear()
        self.pending_faults.clear()
        self.journal.clear()
        self._recent_requests.clear()
        self.requests_counted = 0
        self.clock_offset = 0.0
        self.generation += 1  # callbacks already on their way belong to the world before the reset
        self._changed()

    def check_rate(self) -> None:
        """Apigee's limits in front of Daraja, when configured: per-second spike arrest and a quota."""
        now = self.clock()
        self.requests_counted += 1
        if self.settings.quota and self.requests_counted > self.settings.quota:
            raise QuotaViolation()
        if self.settings.spike_arrest_per_second:
            self._recent_requests = [t for t in self._recent_requests if now - t < 1.0]
            if len(self._recent_requests) >= self.settings.spike_arrest_per_second:
                raise SpikeArrestViolation()
            self._recent_requests.append(now)

    # -- faults --------------------------------------------------------------------------------

    def _use_faults(self, msisdn: str) -> dict[str, Any]:
        """A push's overrides of the catalogue: the number's standing faults, then the first queued
        next-N fault that applies, which this push uses up."""
        overrides = dict(self.subscriber_faults.get(msisdn, {}))
        for fault in self.pending_faults:
            if fault["msisdn"] in (None, msisdn):
                overrides.update(fault["behaviour"])
                fault["remaining"] -= 1
                if fault["remaining"] <= 0:
                    self.pending_faults.remove(fault)
                break
        return overrides

    def add_faults(self, behaviour: dict[str, Any], count: int, msisdn: str | None = None) -> dict[str, Any]:
        fault = {"remaining": count, "msisdn": msisdn, "behaviour": behaviour}
        self.pending_faults.append(fault)
        return fault

    def _changed(self) -> None:
        for listener in list(self.listeners):
            listener()

    # -- OAuth ---------------------------------------------------------------------------------

    def issue_token(self, key: str, secret: str) -> tuple[str, int]:
        if not (hmac.compare_digest(key.encode(), self._consumer_key.encode())
                and hmac.compare_digest(secret.encode(), self._consumer_secret.encode())):
            raise BadClientCredentials()
        token = self._ids.access_token()
        lifetime = self.settings.token_lifetime
        if self.settings.single_token:
            self.tokens.clear()  # Safaricom's FAQ: a new token invalidates the previous one
        else:
            now = self.clock()
            for expired in [t for t, until in self.tokens.items() if until <= now]:
                del self.tokens[expired]
        self.tokens[token] = self.clock() + lifetime
        self.tokens_issued += 1
        return token, lifetime

    def check_token(self, token: str | None) -> None:
        expires_at = self.tokens.get(token or "")
        if expires_at is None or self.clock() >= expires_at:
            raise InvalidAccessToken()

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    # -- STK push ------------------------------------------------------------------------------

    def validate_push(self, body: dict[str, Any]) -> PushOrder:
        """Daraja's field checks, in the order of its sample request."""
        checks: list[tuple[str, str, Callable[[Any], Any]]] = [
            ("BusinessShortCode", "BusinessShortCode", lambda v: _digits(v, 5, 7)),
            ("Password", "Password", lambda v: v if isinstance(v, str) and v.strip() else None),
            ("Timestamp", "Timestamp", _timestamp),
            ("TransactionType", "TransactionType", lambda v: v if v in TRANSACTION_TYPES else None),
            ("Amount", "Amount", _amount),
            ("PartyA", "PartyA", _msisdn),
            ("PartyB", "PartyB", lambda v: _digits(v, 5, 7)),
            ("PhoneNumber", "PhoneNumber", _msisdn),
            ("CallBackURL", "CallBackURL", _callback_url),
            ("AccountReference", "AccountReference", self._account_reference),
            # A missing TransactionDesc is reported by its internal name, "Remarks".
            ("TransactionDesc", "Remarks", lambda v: v.strip() if isinstance(v, str) and v.strip() else None),
        ]
        values = {}
        for name, reported, check in checks:
            value = check(body.get(name))
            if value is None:
                raise InvalidField(reported)
            values[name] = value
        return PushOrder(
            shortcode=values["BusinessShortCode"], password=values["Password"],
            timestamp=values["Timestamp"], transaction_type=values["TransactionType"],
            amount=values["Amount"], party_a=values["PartyA"], party_b=values["PartyB"],
            phone=values["PhoneNumber"], callback_url=values["CallBackURL"],
            account_reference=values["AccountReference"], description=values["TransactionDesc"],
        )

    def _account_reference(self, value: Any) -> str | None:
        if isinstance(value, str) and value.strip() and len(value) <= self.settings.account_reference_max:
            return value
        return None

    def check_password(self, shortcode: str, password: str, timestamp: str) -> None:
        passkey = self.merchants.get(shortcode)
        if passkey is None:
            raise MerchantDoesNotExist()
        if not password_matches(password, shortcode, passkey, timestamp):
            raise WrongCredentials(hint=self.diagnose_password(shortcode, passkey, password, timestamp))

    def diagnose_password(self, shortcode: str, passkey: str, password: str, timestamp: str) -> str:
        """Why a Password is wrong, in words (Daraja only ever says "Wrong credentials")."""
        try:
            decoded = base64.b64decode(password, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "Password is not base64 of text: it must be base64(BusinessShortCode + Passkey + Timestamp)"
        if not decoded.startswith(shortcode):
            return f"Password does not start with the BusinessShortCode {shortcode} once base64-decoded"
        rest = decoded[len(shortcode):]
        if len(rest) >= 14 and rest[-14:].isdigit() and rest[:-14] == passkey and rest[-14:] != timestamp:
            return (f"Password was built with timestamp {rest[-14:]} but the Timestamp field says {timestamp}: "
                    "use the same value for both")
        if not rest.endswith(timestamp):
            return "Password does not end with the Timestamp field once base64-decoded"
        if rest[:-len(timestamp)] != passkey:
            hint = f"the passkey inside the Password does not match shortcode {shortcode}'s passkey"
        else:
            hint = "Password does not match base64(BusinessShortCode + Passkey + Timestamp)"
        skew = timestamp_skew_hours(timestamp, self.clock())
        if abs(skew) >= 0.5:
            direction = "behind" if skew < 0 else "ahead of"
            hint += f"; also, the Timestamp is {abs(skew):.0f} h {direction} Nairobi time"
            if round(skew) == -3:
                hint += " (built in UTC? Daraja expects Africa/Nairobi time)"
        return hint

    def push(self, body: dict[str, Any]) -> Prompt:
        order = self.validate_push(body)
        self.check_password(order.shortcode, order.password, order.timestamp)
        return self.open_prompt(order)

    def open_prompt(self, order: PushOrder) -> Prompt:
        """A checked push reaches the customer's handset (or fails as its behaviour says)."""
        now = self.catch_up()
        if self.settings.lock_subscriber and self._open_by_msisdn.get(order.phone):
            raise SubscriberLocked()  # before any fault is used up: this push never got that far
        overrides = self._use_faults(order.phone)
        scenario = (self.catalogue.get(order.phone) or interactive(order.phone)).overlaid(overrides)
        if scenario.push == "locked":
            raise SubscriberLocked()
        if scenario.push == "error":
            raise InternalServerError()
        if scenario.push == "busy":
            raise SystemBusy()
        mismatch = self._party_b_mismatch(order)
        if mismatch is not None:  # the push is accepted; M-Pesa then fails it without asking the customer
            scenario = scenario.overlaid({"outcome": mismatch, "at": "auto_answer"})
        subscriber = self.subscriber(order.phone)
        if overrides.get("balance") is not None:  # a fault may set the customer's balance
            subscriber.balance = overrides["balance"]
        prompt = Prompt(
            checkout_request_id=self._ids.checkout_request_id(order.phone, now, taken=self.prompts),
            merchant_request_id=self.new_request_id(),
            msisdn=order.phone, amount=order.amount, shortcode=order.shortcode, party_b=order.party_b,
            transaction_type=order.transaction_type, account_reference=order.account_reference,
            description=order.description, callback_url=order.callback_url,
            created_at=now, expires_at=now + self.settings.prompt_lifetime, scenario=scenario,
        )
        if not scenario.interactive:
            delay = self.settings.auto_answer_delay if scenario.at == "auto_answer" else self.settings.prompt_lifetime
            prompt.answer_at = now + delay
        self.prompts[prompt.checkout_request_id] = prompt
        self._open_by_msisdn[prompt.msisdn] = self._open_by_msisdn.get(prompt.msisdn, 0) + 1
        self._forget_old_prompts()
        heapq.heappush(self._deadlines, (min(prompt.answer_at or prompt.expires_at, prompt.expires_at),
                                         prompt.checkout_request_id))
        self._changed()
        return prompt

    def _forget_old_prompts(self) -> None:
        """Prompts are kept in creation order; drop the oldest settled ones past the cap."""
        if len(self.prompts) <= MAX_SETTLED_PROMPTS:
            return
        excess = len(self.prompts) - MAX_SETTLED_PROMPTS - sum(self._open_by_msisdn.values())
        if excess <= 0:
            return
        oldest_settled = itertools.islice((cid for cid, p in self.prompts.items() if not p.open), excess)
        for checkout_request_id in list(oldest_settled):
            del self.prompts[checkout_request_id]

    def _party_b_mismatch(self, order: PushOrder) -> str | None:
        """2028 when PartyB is the wrong kind for the TransactionType, SFC_IC0003 when it is unknown."""
        if order.transaction_type == "CustomerPayBillOnline":
            if order.party_b == order.shortcode:
                return None
            return "2028" if order.party_b in self.tills else "SFC_IC0003"
        if self.tills.get(order.party_b) == order.shortcode:
            return None
        return "2028" if order.party_b in self.merchants else "SFC_IC0003"

    def trigger(self, msisdn: str, amount: int, callback_url: str, account_reference: str = "TEST") -> Prompt:
        """A push straight onto a handset, without OAuth or a Password (the control API's "trigger")."""
        shortcode = next(iter(self.merchants))
        order = PushOrder(shortcode=shortcode, password="", timestamp="", transaction_type="CustomerPayBillOnline",
                          amount=amount, party_a=msisdn, party_b=shortcode, phone=msisdn,
                          callback_url=callback_url, account_reference=account_reference, description="Test")
        return self.open_prompt(order)

    # -- STK query ------------------------------------------------------------------------------

    def query(self, body: dict[str, Any]) -> Prompt:
        """The prompt behind a CheckoutRequestID; callers render open vs settled."""
        shortcode = _digits(body.get("BusinessShortCode"), 5, 7)
        if shortcode is None:
            raise InvalidField("BusinessShortCode")
        password = body.get("Password")
        if not isinstance(password, str) or not password.strip():
            raise InvalidField("Password")
        timestamp = _timestamp(body.get("Timestamp"))
        if timestamp is None:
            raise InvalidField("Timestamp")
        checkout_request_id = body.get("CheckoutRequestID")
        if not isinstance(checkout_request_id, str) or not checkout_request_id.strip():
            raise InvalidField("CheckoutRequestID")
        self.check_password(shortcode, password, timestamp)
        self.catch_up()
        prompt = self.prompts.get(checkout_request_id.strip())
        if prompt is None or prompt.shortcode != shortcode:
            raise InvalidField("CheckoutRequestID")
        return prompt

    def prompt_json(self, prompt: Prompt) -> dict[str, Any]:
        return prompt.to_json(self.clock(), self.business_name)

    def prompts_json(self, msisdn: str | None = None, state: str | None = None,
                     limit: int | None = None) -> list[dict[str, Any]]:
        """Prompts, newest first, optionally for one number and/or in one state, at most `limit`."""
        self.catch_up()
        prompts = [p for p in self.prompts.values()
                   if (msisdn is None or p.msisdn == msisdn) and (state is None or p.state == state)]
        newest = sorted(prompts, key=lambda p: -p.created_at)[:limit]
        return [self.prompt_json(p) for p in newest]

    # -- the handset ---------------------------------------------------------------------------

    def prompt(self, checkout_request_id: str) -> Prompt | None:
        self.catch_up()
        return self.prompts.get(checkout_request_id)

    def enter_pin(self, checkout_request_id: str, pin: str) -> Prompt:
        prompt = self._open_prompt(checkout_request_id)
        ok = hmac.compare_digest(str(pin).encode("utf-8", "surrogatepass"), self.settings.pin.encode())
        return self._settle(prompt, "0" if ok else "2001")

    def cancel(self, checkout_request_id: str) -> Prompt:
        return self._settle(self._open_prompt(checkout_request_id), "1032")

    def ignore(self, checkout_request_id: str) -> Prompt:
        """The customer never answers: the prompt times out now (1037)."""
        return self._settle(self._open_prompt(checkout_request_id), "1037")

    def _open_prompt(self, checkout_request_id: str) -> Prompt:
        self.catch_up()
        prompt = self.prompts.get(checkout_request_id)
        if prompt is None:
            raise KeyError(checkout_request_id)
        if not prompt.open:
            raise PromptClosed(prompt)
        return prompt

    def subscriber(self, msisdn: str) -> Subscriber:
        """The customer behind a number: the same name and balance every run (seeded by the number)."""
        if msisdn not in self.subscribers:
            self._faker.seed_instance(int(msisdn))
            scenario = self.catalogue.get(msisdn)
            balance = scenario.balance if scenario and scenario.balance is not None \
                else self._faker.random_int(2_000, 80_000)
            self.subscribers[msisdn] = Subscriber(msisdn, self._faker.name(), balance)
        return self.subscribers[msisdn]

    # -- time ----------------------------------------------------------------------------------

    def catch_up(self) -> float:
        """Settle every prompt whose scripted answer or expiry is due; returns the time."""
        now = self.clock()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, checkout_request_id = heapq.heappop(self._deadlines)
            prompt = self.prompts.get(checkout_request_id)
            if prompt is None or not prompt.open:
                continue  # answered by hand before its deadline
            if prompt.answer_at is not None and prompt.answer_at <= now and prompt.scenario is not None:
                self._settle(prompt, prompt.scenario.outcome, now)
            else:
                self._settle(prompt, "1037", now)  # nobody answered: "DS timeout user cannot be reached"
        return now

    def next_wakeup(self) -> float | None:
        while self._deadlines and not self._is_open(self._deadlines[0][1]):
            heapq.heappop(self._deadlines)
        times = [self._deadlines[0][0]] if self._deadlines else []
        if self._callback_jobs:
            times.append(self._callback_jobs[0][0])
        return min(times, default=None)

    def _is_open(self, checkout_request_id: str) -> bool:
        prompt = self.prompts.get(checkout_request_id)
        return prompt is not None and prompt.open

    def take_due_callbacks(self) -> list[CallbackJob]:
        now = self.catch_up()
        due = []
        while self._callback_jobs and self._callback_jobs[0][0] <= now:
            due.append(heapq.heappop(self._callback_jobs)[2])
        return due

    def record_callback(self, checkout_request_id: str, attempt: CallbackAttempt, generation: int | None = None) -> None:
        if generation is not None and generation != self.generation:
            return  # sent before a reset: the new world never saw it
        entry = self.journal.add(at=attempt.at, kind="callback", method="POST", url=attempt.url,
                                 status=attempt.status, duration_ms=attempt.duration_ms,
                                 request_headers={"Content-Type": "application/json"}, request_body=attempt.body,
                                 error=attempt.error, checkout_request_id=checkout_request_id,
                                 attempt=attempt.attempt)
        attempt.journal_id = entry.id
        prompt = self.prompts.get(checkout_request_id)
        if prompt is not None:
            prompt.callbacks.append(attempt)
            self._changed()

    # -- settlement ----------------------------------------------------------------------------

    def _settle(self, prompt: Prompt, code: str, now: float | None = None) -> Prompt:
        now = self.clock() if now is None else now
        subscriber = self.subscriber(prompt.msisdn)
        if code == "0" and subscriber.balance < prompt.amount:
            code = "1"
        prompt.state, prompt.result_code, prompt.result_desc = "settled", code, callback_desc(code)
        self._open_by_msisdn[prompt.msisdn] -= 1
        if not self._open_by_msisdn[prompt.msisdn]:
            del self._open_by_msisdn[prompt.msisdn]
        prompt.settled_at = now
        if code == "0":
            subscriber.balance -= prompt.amount
            prompt.balance_after = subscriber.balance
            prompt.receipt = self._ids.receipt(now, taken=self._receipts)
            self._receipts.add(prompt.receipt)
            prompt.transaction_date = daraja_timestamp(now)
            behaviour = prompt.scenario or interactive(prompt.msisdn)
            body = paid_callback(
                merchant_request_id=prompt.merchant_request_id, checkout_request_id=prompt.checkout_request_id,
                result_desc=prompt.result_desc,
                amount=float(prompt.amount) if behaviour.amount_format == "decimal" else prompt.amount,
                receipt=prompt.receipt, transaction_date=prompt.transaction_date, msisdn=prompt.msisdn,
                balance_item=behaviour.balance_item == "empty")
        else:
            body = failed_callback(merchant_request_id=prompt.merchant_request_id,
                                   checkout_request_id=prompt.checkout_request_id, result_code=code,
                                   result_desc=prompt.result_desc)
        self._schedule_callbacks(prompt, body, now)
        self._changed()
        return prompt

    def _schedule_callbacks(self, prompt: Prompt, body: dict[str, Any], now: float) -> None:
        behaviour = prompt.scenario or interactive(prompt.msisdn)
        delay = behaviour.callback_delay
        if delay is None:
            delay = self.settings.late_callback_delay if behaviour.callback == "late" else self.settings.callback_delay
        times = {"once": [delay], "never": [], "twice": [delay, delay + 0.05], "late": [delay]}[behaviour.callback]
        for offset in times:
            self._schedule(CallbackJob(now + offset, prompt.checkout_request_id, prompt.callback_url, body))

    def _schedule(self, job: CallbackJob) -> None:
        job.generation = self.generation
        heapq.heappush(self._callback_jobs, (job.due_at, next(self._job_seq), job))
        self._changed()

    def retry_later(self, job: CallbackJob) -> bool:
        """Schedule another attempt after a failed delivery, if retries are configured (Daraja: none)."""
        if job.attempt > self.settings.callback_retries or job.generation != self.generation:
            return False
        delay = self.settings.callback_retry_delay * 2 ** (job.attempt - 1)
        self._schedule(CallbackJob(self.clock() + delay, job.checkout_request_id, job.url, job.body,
                                   job.attempt + 1))
        return True

    def resend(self, journal_id: int) -> CallbackJob:
        """Send a callback again, as it was sent (like `stripe events resend`)."""
        entry = self.journal.get(journal_id)
        if entry is None or entry.kind != "callback":
            raise KeyError(journal_id)
        prompt = self.prompts.get(entry.checkout_request_id or "")
        body = next((a.body for a in prompt.callbacks if a.journal_id == journal_id), None) if prompt else None
        if body is None:
            raise KeyError(journal_id)
        job = CallbackJob(self.clock(), entry.checkout_request_id or "", entry.url, body)
        self._schedule(job)
        return job

    def new_request_id(self) -> str:
        return self._ids.request_id()


class PromptClosed(Exception):
    def __init__(self, prompt: Prompt) -> None:
        super().__init__(f"prompt {prompt.checkout_request_id} is already {prompt.state}")
        self.prompt = prompt


def timestamp_skew_hours(timestamp: str, now: float) -> float:
    """How far a Daraja Timestamp is from Nairobi time now, in hours (negative: behind)."""
    stamped = read_timestamp(timestamp)
    assert stamped is not None  # checked with the request's fields
    return (stamped - nairobi_time(now)) / timedelta(hours=1)
