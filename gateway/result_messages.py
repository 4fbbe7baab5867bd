"""What the shop's customer is told, in two tables: Daraja's ResultCodes (`MESSAGES`, used for
every status answer), and Daraja's refusals of a push by kind (`DARAJA_ANSWERS`)."""

from __future__ import annotations

from dataclasses import dataclass

from .daraja.errors import (
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

MESSAGES: dict[str, str] = {
    "0": "Payment completed",
    "1": "Insufficient M-Pesa balance",
    "2": "Amount is below the M-Pesa minimum",
    "3": "Amount is above the M-Pesa transaction limit",
    "4": "This payment would exceed the daily M-Pesa limit",
    "8": "This payment would exceed the recipient's maximum balance",
    "17": "A payment of the same amount was just made; please wait two minutes",
    "26": "M-Pesa is busy; please try again shortly",
    "1001": "Another M-Pesa transaction is in progress on this phone",
    "1019": "The payment request expired before it was completed",
    "1025": "M-Pesa could not send the payment prompt; please try again",
    "1031": "User cancelled transaction",
    "1032": "User cancelled transaction",
    "1037": "The phone could not be reached; check it is on and try again",
    "2001": "Wrong M-Pesa PIN entered",
    "2028": "This merchant is not set up for this kind of payment",
    "8006": "The M-Pesa PIN is locked",
    "9999": "M-Pesa could not send the payment prompt; please try again",
    "SFC_IC0003": "This merchant is not set up for this kind of payment",
    "E3008": "This phone number cannot pay with M-Pesa here",
    "timeout": "Payment not confirmed: M-Pesa did not answer in time",
}


def customer_message(result_code: str | None, result_desc: str = "") -> str:
    if result_code in MESSAGES:
        return MESSAGES[result_code]
    return result_desc.strip() or "The payment failed"


# -- Daraja's refusals ------------------------------------------------------------------------

@dataclass(frozen=True)
class DarajaAnswer:
    """The gateway's answer to a push Daraja did not accept: HTTP status, the customer's message,
    and the extras (`field`, Daraja's `errorCode`, `Retry-After`); `logged` when the shop should
    hear of it (not the customer's own doing)."""

    status: int
    message: str
    field: str | None = None
    with_error_code: bool = False
    retry_after: int | None = None
    logged: bool = False


MAYBE_SENT = "maybe_sent"  # the qualifier of DarajaUnavailable whose push may have gone out

_REFUSED = DarajaAnswer(502, "M-Pesa refused the payment request. Please try again or contact the shop.",
                        with_error_code=True, logged=True)
_BUSY = DarajaAnswer(503, "M-Pesa is busy. Please try again shortly.", with_error_code=True, retry_after=5)
_BAD_PHONE = DarajaAnswer(400, "Invalid phone number format", field="phone")

# Keyed by kind, or by (kind, qualifier): InvalidField's field, DarajaUnavailable's MAYBE_SENT.
# The most specific key wins, then the nearest class.
DARAJA_ANSWERS: dict[type[Exception] | tuple[type[Exception], str], DarajaAnswer] = {
    # The prompt may reach the phone: a blind retry could charge twice.
    (DarajaUnavailable, MAYBE_SENT): DarajaAnswer(
        504, "We could not confirm the payment request with M-Pesa. If a prompt appears on your phone you can "
             "complete it, and it will be recorded. Please check your phone before trying again.", logged=True),
    DarajaUnavailable: DarajaAnswer(503, "M-Pesa is not reachable right now. Please try again in a moment.",
                                    logged=True),
    AuthRefused: DarajaAnswer(502, "Payment service is not configured correctly. Please contact the shop.",
                              logged=True),
    SubscriberLocked: DarajaAnswer(409, "A payment request is already waiting on this phone. Complete or cancel "
                                        "it, then try again in a minute.", with_error_code=True),
    RateLimited: _BUSY,
    SystemBusy: _BUSY,
    (InvalidField, "PhoneNumber"): _BAD_PHONE,
    (InvalidField, "PartyA"): _BAD_PHONE,
    (InvalidField, "Amount"): DarajaAnswer(400, "M-Pesa does not accept this amount", field="amount"),
    InvalidField: _REFUSED,  # a field the customer did not type (CallBackURL, BusinessShortCode, …)
    InvalidToken: _REFUSED,  # only after a fresh token was refused too
    WrongCredentials: _REFUSED,
    MerchantDoesNotExist: _REFUSED,
    StillProcessing: _REFUSED,  # the query's word; not expected of a push
    DarajaError: _REFUSED,  # any other refusal
}


def _qualifier(exc: DarajaError | DarajaUnavailable) -> str | None:
    if isinstance(exc, InvalidField):
        return exc.field
    if isinstance(exc, DarajaUnavailable) and exc.maybe_sent:
        return MAYBE_SENT
    return None


def daraja_answer(exc: DarajaError | DarajaUnavailable) -> DarajaAnswer:
    """The row of `DARAJA_ANSWERS` for `exc`."""
    qualifier = _qualifier(exc)
    for kind in type(exc).__mro__:
        if qualifier is not None and (kind, qualifier) in DARAJA_ANSWERS:
            return DARAJA_ANSWERS[(kind, qualifier)]
        if kind in DARAJA_ANSWERS:
            return DARAJA_ANSWERS[kind]
    raise LookupError(f"no answer for {type(exc).__name__}")
