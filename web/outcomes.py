"""A failed payment in the customer's words on the pages: the reason, and what to do next.

The reason is the gateway's (`gateway/result_messages.py`), except where the customer's phone says
it otherwise: a prompt nobody answered (Daraja's 1037 and 1019, and the gateway's own time-out)
reads as the phone reads it, "The payment request has expired". Every failure says what to do
next. The pay page gets this table in its configuration (`outcomes`); the receipt page uses
`describe()`; nothing is written twice.
"""

from __future__ import annotations

from typing import Any

EXPIRED = "The payment request has expired"  # the virtual phone's (and Safaricom's) words for a no-answer
TRY_AGAIN = "Tap Try Again to send a new request to your phone."

REASONS: dict[str, str] = {
    "1019": EXPIRED,
    "1037": EXPIRED,
    "timeout": EXPIRED,
}

NEXT: dict[str, str] = {
    "1": "Nothing was paid. Top up your M-Pesa account or enter another number, then tap Try Again.",
    "2": "Nothing was paid. Contact the shop: M-Pesa does not take an amount this small.",
    "3": "Nothing was paid. Contact the shop: this amount is above what M-Pesa takes in one payment.",
    "4": "Nothing was paid. Pay from another number, or try again tomorrow.",
    "8": "Nothing was paid. Contact the shop to pay another way.",
    "17": "Nothing was paid. Wait two minutes, then tap Try Again.",
    "26": "Nothing was paid. Wait a moment, then tap Try Again.",
    "1001": "Nothing was paid. Finish or cancel the other M-Pesa transaction on your phone, then tap Try Again.",
    "1019": "Nothing was paid. Keep your phone unlocked and nearby, then tap Try Again and enter your PIN when "
            "the request appears.",
    "1025": "Nothing was paid. " + TRY_AGAIN,
    "1031": "Nothing was paid. Tap Try Again when you are ready to pay.",
    "1032": "Nothing was paid. Tap Try Again when you are ready to pay.",
    "1037": "Nothing was paid. Check that your phone is on and has signal, then tap Try Again and enter your PIN "
            "when the request appears.",
    "2001": "Nothing was paid. Tap Try Again and enter your M-Pesa PIN carefully.",
    "2028": "Nothing was paid. Contact the shop: it cannot take this payment right now.",
    "8006": "Nothing was paid. Ask Safaricom to unlock your M-Pesa PIN, or enter another number and tap Try Again.",
    "9999": "Nothing was paid. " + TRY_AGAIN,
    "SFC_IC0003": "Nothing was paid. Contact the shop: it cannot take this payment right now.",
    "E3008": "Nothing was paid. Enter another Safaricom number, then tap Try Again.",
    "timeout": "If you entered your PIN, the payment may still come through: this page will show it. Check your "
               "M-Pesa messages before you try again, so that you do not pay twice.",
}

DEFAULT_NEXT = "Nothing was paid. " + TRY_AGAIN + " If it keeps failing, contact the shop."


def table() -> dict[str, Any]:
    """The table as the pay page's script takes it (`describeFailure` in payment.js)."""
    return {"reasons": REASONS, "next": NEXT, "defaultNext": DEFAULT_NEXT}


def describe(result_code: str | None, message: str) -> dict[str, str]:
    """A failed payment's reason and next step, for the receipt page."""
    code = result_code or ""
    return {"message": REASONS.get(code, message), "next": NEXT.get(code, DEFAULT_NEXT)}
