"""Daraja ResultCodes in the words a customer understands (one table, used for every answer)."""

from __future__ import annotations

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
