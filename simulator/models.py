"""The simulated Daraja and the customers' handsets as plain objects: no HTTP in here.

`SimulatedDaraja` is the core: OAuth tokens, customers, prompts and the rules that move a prompt
from open to settled. Time comes from an injectable clock and every public method first catches
up with it, so a test can drive the whole world synchronously. Its parts are plain too:
`validation` checks bodies and Passwords, `ids` makes identifiers, `faults` keeps injected
faults, `callbacks` queues callback deliveries, `limits` counts requests, `journal` records them.
"""

from __future__ import annotations

import heapq
import hmac
import itertools
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from faker import Faker

from .callbacks import CallbackAttempt, CallbackJob, CallbackQueue
from .exceptions import (
    BadClientCredentials,
    InternalServerError,
    InvalidAccessToken,
    InvalidField,
    SubscriberLocked,
    SystemBusy,
)
from .faults import Behaviour, FaultBook, NextPushesFault
from .ids import DarajaIds
from .journal import Journal, JournalEntry
from .limits import TrafficLimits
from .profiles import Profile
from .result_codes import callback_desc
from .scenarios import ANY_OTHER_NUMBER, Scenario
from .settings import SimulatorSettings
from .validation import PushOrder, check_password, validate_push, validate_query
from .wire import daraja_timestamp, failed_callback, nairobi_time, paid_callback

MAX_SETTLED_PROMPTS = 20_000  # the oldest settled prompts are forgotten past this (long load tests)
MAX_SUBSCRIBERS = 20_000  # and the customers seen least recently, who come back as new when asked for


DAILY_LIMIT = 500_000  # KES a customer may transact in a day


@dataclass
class Subscriber:
    msisdn: str
    # The name, or what draws it from the number the first time it is asked for (Faker takes longer
    # than the rest of a push, and under load most customers' names are never shown).
    name_source: str | Callable[[str], str]
    balance: int  # KES
    day: str = ""  # the Nairobi date of `spent_today`
    spent_today: int = 0

    @property
    def name(self) -> str:
        if not isinstance(self.name_source, str):
            self.name_source = self.name_source(self.msisdn)
        return self.name_source

    def pay(self, amount: int, day: str) -> int:
        """Take `amount` from the balance; returns what the customer may still transact today."""
        if day != self.day:
            self.day, self.spent_today = day, 0
        self.balance -= amount
        self.spent_today += amount
        return max(0, DAILY_LIMIT - self.spent_today)

    def to_json(self) -> dict[str, Any]:
        return {"msisdn": self.msisdn, "name": self.name, "balance": self.balance}


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
    scenario: Scenario
    answer_at: float | None = None  # when a scripted outcome happens
    state: str = "open"  # open | settled
    result_code: str | None = None
    result_desc: str | None = None
    receipt: str | None = None
    transaction_date: str | None = None
    balance_after: int | None = None
    sms: str | None = None  # the handset's confirmation SMS, once paid
    settled_at: float | None = None
    callbacks: tuple[CallbackAttempt, ...] = ()  # a tuple: most prompts have none, and a list each would cost

    @property
    def open(self) -> bool:
        return self.state == "open"

    def prompt_text(self, business_name: str) -> str:
        return f"Do you want to pay Ksh {self.amount:,} to {business_name}? Enter M-PESA PIN"

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
            "scenario": self.scenario.title,
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
            "smsText": self.sms,
            "callbacks": [c.to_json() for c in self.callbacks],
        }


class PromptClosed(Exception):
    def __init__(self, prompt: Prompt) -> None:
        super().__init__(f"prompt {prompt.checkout_request_id} is already {prompt.state}")
        self.prompt = prompt


class SimulatedDaraja:
    def __init__(self, settings: SimulatorSettings, *, catalogue: dict[str, Scenario],
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.business_name = settings.business_name
        self.merchants = settings.merchants  # shortcode -> passkey
        self.tills = settings.all_tills  # till -> store shortcode
        self.catalogue = catalogue
        self.journal = Journal(secrets=[settings.consumer_secret, *self.merchants.values()])
        self.tokens_issued = 0
        self._wall_clock = clock
        self._clock_offset = 0.0  # moved by advance_clock(), so tests need not wait
        self._ids = DarajaIds(rng or random.SystemRandom())
        self._faker = Faker("en_KE")
        self._draw_name = self._seeded_name  # bound once, shared by every customer
        self._tokens: dict[str, float] = {}  # token -> expires at
        self._subscribers: dict[str, Subscriber] = {}  # in the order first seen
        self._recently_seen: OrderedDict[str, None] = OrderedDict()  # least recently seen first
        self._prompts: dict[str, Prompt] = {}  # in creation order
        self._receipts: set[str] = set()  # the receipts of the kept prompts: new ones must differ
        self._open_by_msisdn: dict[str, int] = {}  # how many open prompts each number has
        self._open_prompts = 0  # the sum of those
        # A min-heap, so that catching up with the clock costs O(log n) however many prompts are open.
        self._deadlines: list[tuple[float, str]] = []  # (answer or expiry time, CheckoutRequestID)
        self._faults = FaultBook()
        self._callbacks = CallbackQueue(settings)
        self._limits = TrafficLimits(settings.spike_arrest_per_second, settings.quota)
        self._listeners: list[Callable[[], None]] = []  # told after every change (runner, live pages)

    # -- read-only views --------------------------------------------------------------------------

    @property
    def prompts(self) -> Mapping[str, Prompt]:
        return MappingProxyType(self._prompts)

    @property
    def subscribers(self) -> Mapping[str, Subscriber]:
        return MappingProxyType(self._subscribers)

    @property
    def tokens(self) -> Mapping[str, float]:
        return MappingProxyType(self._tokens)

    def state_sizes(self) -> dict[str, int]:
        """How much the simulator holds: what must stay bounded however long it runs."""
        return {"prompts": len(self._prompts), "receipts": len(self._receipts),
                "subscribers": len(self._subscribers), "tokens": len(self._tokens),
                "deadlines": len(self._deadlines), "callbacks": len(self._callbacks)}

    # -- listeners and time --------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every change (a push, an answer, a settlement, a callback)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def clock(self) -> float:
        return self._wall_clock() + self._clock_offset

    @property
    def clock_offset(self) -> float:
        return self._clock_offset

    def advance_clock(self, seconds: float) -> float:
        """Move the simulator's time forward: tokens and prompts expire as if that time had passed."""
        self._clock_offset += seconds
        now = self.catch_up()
        self._changed()
        return now

    def catch_up(self) -> float:
        """Settle every prompt whose scripted answer or expiry is due; returns the time."""
        now = self.clock()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, checkout_request_id = heapq.heappop(self._deadlines)
            prompt = self._prompts.get(checkout_request_id)
            if prompt is None or not prompt.open:
                continue  # answered by hand before its deadline
            if prompt.answer_at is not None and prompt.answer_at <= now:
                self._settle(prompt, prompt.scenario.outcome, now)
            else:
                self._settle(prompt, "1037", now)  # nobody answered: "DS timeout user cannot be reached"
        return now

    def next_wakeup(self) -> float | None:
        """When something is next due: a scripted answer, an expiry or a callback."""
        while self._deadlines and not self._is_open(self._deadlines[0][1]):
            heapq.heappop(self._deadlines)
        times = [self._deadlines[0][0]] if self._deadlines else []
        callback_due = self._callbacks.next_due()
        if callback_due is not None:
            times.append(callback_due)
        return min(times, default=None)

    def _is_open(self, checkout_request_id: str) -> bool:
        prompt = self._prompts.get(checkout_request_id)
        return prompt is not None and prompt.open

    def reset(self) -> None:
        """Forget everything that happened: prompts, tokens, customers, faults, journal, time moved."""
        self._tokens.clear()
        self._subscribers.clear()
        self._recently_seen.clear()
        self._prompts.clear()
        self._receipts.clear()
        self._deadlines.clear()
        self._open_by_msisdn.clear()
        self._open_prompts = 0
        self._faults.clear()
        self._callbacks.reset()  # callbacks already on their way belong to the world before the reset
        self._limits.reset()
        self.journal.clear()
        self._clock_offset = 0.0
        self._changed()

    # -- OAuth and Apigee's limits ----------------------------------------------------------------

    def issue_token(self, key: str, secret: str) -> tuple[str, int]:
        if not (hmac.compare_digest(key.encode(), self.settings.consumer_key.encode())
                and hmac.compare_digest(secret.encode(), self.settings.consumer_secret.encode())):
            raise BadClientCredentials()
        now = self.clock()
        if self.settings.single_token:
            self._tokens.clear()  # Safaricom's FAQ: a new token invalidates the previous one
        else:
            for expired in [t for t, until in self._tokens.items() if until <= now]:
                del self._tokens[expired]
        token = self._ids.access_token()
        self._tokens[token] = now + self.settings.token_lifetime
        self.tokens_issued += 1
        return token, self.settings.token_lifetime

    def check_token(self, token: str | None) -> None:
        expires_at = self._tokens.get(token or "")
        if expires_at is None or self.clock() >= expires_at:
            raise InvalidAccessToken()

    def revoke_tokens(self) -> int:
        """Expire every token now; returns how many there were."""
        count = len(self._tokens)
        self._tokens.clear()
        return count

    def check_rate(self) -> None:
        self._limits.count(self.clock())

    def new_request_id(self) -> str:
        return self._ids.request_id()

    # -- STK push and query --------------------------------------------------------------------------

    def push(self, body: dict[str, Any]) -> Prompt:
        order = validate_push(body, account_reference_max=self.settings.account_reference_max)
        check_password(self.merchants, order.shortcode, order.password, order.timestamp, self.clock())
        return self.send_to_handset(order)

    def trigger(self, msisdn: str, amount: int, callback_url: str, account_reference: str = "TEST") -> Prompt:
        """A push straight onto a handset, without OAuth or a Password (the control API's "trigger")."""
        shortcode = next(iter(self.merchants))
        order = PushOrder(shortcode=shortcode, password="", timestamp="", transaction_type="CustomerPayBillOnline",
                          amount=amount, party_a=msisdn, party_b=shortcode, phone=msisdn,
                          callback_url=callback_url, account_reference=account_reference, description="Test")
        return self.send_to_handset(order)

    def send_to_handset(self, order: PushOrder) -> Prompt:
        """A checked push reaches the customer's handset as a new prompt (or fails as its behaviour says)."""
        now = self.catch_up()
        if self.settings.lock_subscriber and self._open_by_msisdn.get(order.phone):
            raise SubscriberLocked()  # before any fault is used up: this push never got that far
        overrides = self._faults.use(order.phone)
        scenario = (self.catalogue.get(order.phone) or ANY_OTHER_NUMBER).overlaid(overrides)
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
            checkout_request_id=self._ids.checkout_request_id(order.phone, now, taken=self._prompts),
            merchant_request_id=self._ids.request_id(),
            msisdn=order.phone, amount=order.amount, shortcode=order.shortcode, party_b=order.party_b,
            transaction_type=order.transaction_type, account_reference=order.account_reference,
            description=order.description, callback_url=order.callback_url,
            created_at=now, expires_at=now + self.settings.prompt_lifetime, scenario=scenario,
        )
        if not scenario.interactive:
            delay = self.settings.auto_answer_delay if scenario.at == "auto_answer" else self.settings.prompt_lifetime
            prompt.answer_at = now + delay
        self._prompts[prompt.checkout_request_id] = prompt
        self._open_by_msisdn[prompt.msisdn] = self._open_by_msisdn.get(prompt.msisdn, 0) + 1
        self._open_prompts += 1
        self._forget_old_prompts()
        heapq.heappush(self._deadlines, (min(prompt.answer_at or prompt.expires_at, prompt.expires_at),
                                         prompt.checkout_request_id))
        self._changed()
        return prompt

    def _party_b_mismatch(self, order: PushOrder) -> str | None:
        """2028 when PartyB is the wrong kind for the TransactionType, SFC_IC0003 when it is unknown."""
        if order.transaction_type == "CustomerPayBillOnline":
            if order.party_b == order.shortcode:
                return None
            return "2028" if order.party_b in self.tills else "SFC_IC0003"
        if self.tills.get(order.party_b) == order.shortcode:
            return None
        return "2028" if order.party_b in self.merchants else "SFC_IC0003"

    def _forget_old_prompts(self) -> None:
        """Prompts are kept in creation order; drop the oldest settled ones (and their receipts)
        past the cap."""
        if len(self._prompts) <= MAX_SETTLED_PROMPTS:
            return
        excess = len(self._prompts) - MAX_SETTLED_PROMPTS - self._open_prompts
        if excess <= 0:
            return
        oldest_settled = itertools.islice((p for p in self._prompts.values() if not p.open), excess)
        for prompt in list(oldest_settled):
            del self._prompts[prompt.checkout_request_id]
            self._receipts.discard(prompt.receipt or "")

    def query(self, body: dict[str, Any]) -> Prompt:
        """The prompt behind a CheckoutRequestID; callers render open vs settled."""
        order = validate_query(body)
        check_password(self.merchants, order.shortcode, order.password, order.timestamp, self.clock())
        self.catch_up()
        prompt = self._prompts.get(order.checkout_request_id)
        if prompt is None or prompt.shortcode != order.shortcode:
            raise InvalidField("CheckoutRequestID")
        return prompt

    # -- prompts as the pages and the control API see them ------------------------------------------

    def prompt(self, checkout_request_id: str) -> Prompt | None:
        self.catch_up()
        return self._prompts.get(checkout_request_id)

    def prompt_json(self, prompt: Prompt) -> dict[str, Any]:
        return prompt.to_json(self.clock(), self.business_name)

    def prompts_json(self, msisdn: str | None = None, state: str | None = None,
                     limit: int | None = None) -> list[dict[str, Any]]:
        """Prompts, newest first, optionally for one number and/or in one state, at most `limit`."""
        self.catch_up()
        prompts = [p for p in self._prompts.values()
                   if (msisdn is None or p.msisdn == msisdn) and (state is None or p.state == state)]
        newest = sorted(prompts, key=lambda p: -p.created_at)[:limit]
        return [self.prompt_json(p) for p in newest]

    def has_open_prompts(self) -> bool:
        return bool(self._open_by_msisdn)

    # -- the handset -----------------------------------------------------------------------------------

    def enter_pin(self, checkout_request_id: str, pin: str) -> Prompt:
        prompt = self._find_unanswered(checkout_request_id)
        ok = hmac.compare_digest(str(pin).encode("utf-8", "surrogatepass"), self.settings.pin.encode())
        return self._settle(prompt, "0" if ok else "2001")

    def cancel(self, checkout_request_id: str) -> Prompt:
        return self._settle(self._find_unanswered(checkout_request_id), "1032")

    def ignore(self, checkout_request_id: str) -> Prompt:
        """The customer never answers: the prompt times out now (1037)."""
        return self._settle(self._find_unanswered(checkout_request_id), "1037")

    def _find_unanswered(self, checkout_request_id: str) -> Prompt:
        """The prompt still waiting on the handset; KeyError if unknown, PromptClosed if settled."""
        self.catch_up()
        prompt = self._prompts.get(checkout_request_id)
        if prompt is None:
            raise KeyError(checkout_request_id)
        if not prompt.open:
            raise PromptClosed(prompt)
        return prompt

    # -- customers -----------------------------------------------------------------------------------

    def subscriber(self, msisdn: str) -> Subscriber:
        """The customer behind a number: the same name and balance every run (seeded by the number)."""
        found = self._subscribers.get(msisdn)
        if found is not None:
            self._recently_seen.move_to_end(msisdn)
            return found
        scenario = self.catalogue.get(msisdn)
        balance = scenario.balance if scenario is not None and scenario.balance is not None \
            else self._seeded_balance(msisdn)
        # One drawer for all (not a closure each): every object a push keeps adds to the garbage
        # collector's full passes, which under load are what the slowest answers wait for.
        found = self._subscribers[msisdn] = Subscriber(msisdn, self._draw_name, balance)
        self._recently_seen[msisdn] = None
        self._forget_idle_subscribers(keep=msisdn)
        return found

    def _seeded_balance(self, msisdn: str) -> int:
        """A customer's balance: Faker's first draw, seeded by the number."""
        self._faker.seed_instance(int(msisdn))
        return int(self._faker.random_int(2_000, 80_000))

    def _seeded_name(self, msisdn: str) -> str:
        """A customer's name: Faker's draw after the balance's (none for a catalogue balance), seeded
        by the number, so it is the same whenever it is first asked for."""
        scenario = self.catalogue.get(msisdn)
        self._faker.seed_instance(int(msisdn))
        if scenario is None or scenario.balance is None:
            self._faker.random_int(2_000, 80_000)
        return str(self._faker.name())

    def list_subscribers(self) -> list[Subscriber]:
        return list(self._subscribers.values())

    def _forget_idle_subscribers(self, keep: str) -> None:
        """Past the cap, forget the customers seen least recently, except those with an open prompt
        (its settlement needs their balance) and `keep`, the one just asked for (a push is about to
        open a prompt for them); anyone forgotten comes back as new when asked for."""
        idle = len(self._subscribers) - len(self._open_by_msisdn) - (keep not in self._open_by_msisdn)
        if len(self._subscribers) <= MAX_SUBSCRIBERS or idle <= 0:
            return  # nobody may go: without this, every new customer would walk past every open one
        for _ in range(len(self._recently_seen)):
            if len(self._subscribers) <= MAX_SUBSCRIBERS:
                return
            msisdn = next(iter(self._recently_seen))
            if msisdn in self._open_by_msisdn or msisdn == keep:
                self._recently_seen.move_to_end(msisdn)
            else:
                del self._recently_seen[msisdn], self._subscribers[msisdn]

    # -- faults ----------------------------------------------------------------------------------------

    def add_faults(self, behaviour: Behaviour, count: int, msisdn: str | None = None) -> NextPushesFault:
        """The next `count` pushes (to `msisdn`, or to any number) behave so."""
        return self._faults.queue(behaviour, count, msisdn)

    def set_subscriber_faults(self, msisdn: str, behaviour: Behaviour) -> None:
        """Every push to `msisdn` behaves so, until lifted (replaces what was set before)."""
        self._faults.stand(msisdn, behaviour)

    def lift_subscriber_faults(self, msisdn: str) -> None:
        self._faults.lift(msisdn)

    def clear_faults(self) -> None:
        self._faults.clear()

    def faults_json(self) -> dict[str, Any]:
        return self._faults.to_json()

    # -- settlement and callbacks ---------------------------------------------------------------------

    def _settle(self, prompt: Prompt, code: str, now: float | None = None) -> Prompt:
        now = self.clock() if now is None else now
        subscriber = self.subscriber(prompt.msisdn)
        if code == "0" and subscriber.balance < prompt.amount:
            code = "1"
        prompt.state, prompt.result_code = "settled", code
        prompt.result_desc = callback_desc(code, self.settings.daraja)
        prompt.settled_at = now
        self._open_by_msisdn[prompt.msisdn] -= 1
        self._open_prompts -= 1
        if not self._open_by_msisdn[prompt.msisdn]:
            del self._open_by_msisdn[prompt.msisdn]
        behaviour = prompt.scenario
        if code == "0":
            remaining_today = subscriber.pay(prompt.amount, daraja_timestamp(now)[:8])
            prompt.balance_after = subscriber.balance
            prompt.receipt = self._ids.receipt(now, taken=self._receipts)
            self._receipts.add(prompt.receipt)
            prompt.transaction_date = daraja_timestamp(now)
            prompt.sms = confirmation_sms(prompt, self.business_name, self.settings.daraja, remaining_today)
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
        self._callbacks.schedule_settlement(prompt.checkout_request_id, prompt.callback_url, body, behaviour, now)
        self._forget_idle_subscribers(keep=prompt.msisdn)  # customers kept for their open prompts may go now
        self._changed()
        return prompt

    def take_due_callbacks(self) -> list[CallbackJob]:
        return self._callbacks.take_due(self.catch_up())

    def record_callback(self, checkout_request_id: str, attempt: CallbackAttempt,
                        generation: int | None = None) -> None:
        """A delivery attempt, in the journal and on its prompt (unless it predates a reset)."""
        if not self._callbacks.is_current(generation):
            return  # sent before a reset: the new world never saw it
        attempt.journal_id = self.journal.add(
            at=attempt.at, kind="callback", method="POST", url=attempt.url, status=attempt.status,
            duration_ms=attempt.duration_ms, request_headers={"Content-Type": "application/json"},
            request_body=attempt.body, error=attempt.error, checkout_request_id=checkout_request_id,
            attempt=attempt.attempt)
        prompt = self._prompts.get(checkout_request_id)
        if prompt is not None:
            prompt.callbacks += (attempt,)
            self._changed()

    def retry_later(self, job: CallbackJob) -> bool:
        """Schedule another attempt after a failed delivery, if retries are configured (Daraja: none)."""
        scheduled = self._callbacks.retry(job, self.clock())
        if scheduled:
            self._changed()
        return scheduled

    def resend(self, journal_id: int) -> CallbackJob:
        """Send a callback again, as it was sent (like `stripe events resend`)."""
        entry = self.journal.get(journal_id)
        if entry is None or entry.kind != "callback":
            raise KeyError(journal_id)
        prompt = self._prompts.get(entry.checkout_request_id or "")
        body = next((a.body for a in prompt.callbacks if a.journal_id == journal_id), None) if prompt else None
        if body is None:
            raise KeyError(journal_id)
        job = CallbackJob(self.clock(), entry.checkout_request_id or "", entry.url, body)
        self._callbacks.schedule(job)
        self._changed()
        return job

    # -- the journal ---------------------------------------------------------------------------------

    def record_request(self, **fields: Any) -> int:
        """A request to the simulator's Daraja paths and its answer (secrets are masked when read): its id."""
        return self.journal.add(kind="request", **fields)

    def journal_entries(self, kind: str | None = None, checkout_request_id: str | None = None,
                        limit: int = 200) -> list[JournalEntry]:
        return self.journal.entries(kind, checkout_request_id, limit)


def confirmation_sms(prompt: Prompt, business_name: str, profile: Profile, remaining_today: int) -> str:
    """M-Pesa's confirmation SMS for a paid prompt, in its wording for a paybill or a till: the
    2025 form (with the day's remaining limit) or the classic one, as the profile says."""
    assert prompt.receipt is not None and prompt.settled_at is not None
    moment = nairobi_time(prompt.settled_at)
    clock = moment.strftime("%I:%M %p").lstrip("0")
    amount, balance = f"Ksh{prompt.amount:,.2f}", f"Ksh{prompt.balance_after or 0:,.2f}"
    if prompt.transaction_type == "CustomerBuyGoodsOnline":
        paid = f"{amount} paid to {business_name}."
    else:
        paid = f"{amount} sent to {business_name} for account {prompt.account_reference}"
    if profile.sms == "2025":
        return (f"{prompt.receipt} Confirmed. {paid} on {moment.day}/{moment.month}/{moment:%y} at {clock} "
                f"New M-PESA balance is {balance}. Amount you can transact within the day is {remaining_today:,.2f}.")
    return (f"{prompt.receipt} Confirmed. {paid} on {moment:%d/%m/%y} at {clock}. New M-PESA balance is "
            f"{balance}. Transaction cost, Ksh0.00.")
