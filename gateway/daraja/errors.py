"""Typed errors for what Daraja answers, keeping its `errorCode`, `errorMessage` and `requestId`.

The kind of an error is decided once, where Daraja's answer is parsed (`client.parse_error`);
everything else asks `isinstance`, never the code or the text. What the shop's customer is told
for each kind is one table (`result_messages.DARAJA_ANSWERS`).
"""

from __future__ import annotations


class DarajaError(Exception):
    """Daraja answered, and refused: its error envelope (`requestId`, `errorCode`, `errorMessage`).

    Raised as itself for a refusal of no known kind (the generic fallback); the subclasses below
    are the kinds the gateway tells apart. Nothing reached the customer's phone."""

    def __init__(self, http_status: int, error_code: str, error_message: str, request_id: str = "") -> None:
        super().__init__(f"{error_code} {error_message} (HTTP {http_status})")
        self.http_status = http_status
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id


class AuthRefused(DarajaError):
    """OAuth refused the consumer key and secret, or the request (an empty 400, `400.008.01`,
    `400.008.02`, or the Ethiopia-style `resultCode/resultDesc`)."""


class InvalidToken(DarajaError):
    """`404.001.03 Invalid Access Token`: the bearer token expired or was revoked."""


class InvalidField(DarajaError):
    """`400.002.02 Bad Request - Invalid <Field>`: `field` is the name Daraja gave (`PhoneNumber`,
    `PartyA`, `Amount`, `CallBackURL`, `Remarks`, `BusinessShortCode`, …)."""

    def __init__(self, http_status: int, error_code: str, error_message: str, request_id: str = "", *,
                 field: str) -> None:
        super().__init__(http_status, error_code, error_message, request_id)
        self.field = field


class SubscriberLocked(DarajaError):
    """`500.001.1001 Unable to lock subscriber…`: a prompt is already open on that phone."""


class StillProcessing(DarajaError):
    """`500.001.1001 The transaction is being processed`: the STK query's older way of saying the
    customer has not answered yet (the query reads it as pending)."""


class WrongCredentials(DarajaError):
    """`500.001.1001 Wrong credentials`: the Password does not match the shortcode and passkey."""


class MerchantDoesNotExist(DarajaError):
    """`500.001.1001 Merchant does not exist`: the shortcode is unknown or not enabled for STK."""


class RateLimited(DarajaError):
    """`500.003.02 Spike Arrest Violation`, `500.003.03 Quota Violation`, an Apigee
    `policies.ratelimit.*` fault, or HTTP 429: too many requests; try again shortly."""


class SystemBusy(DarajaError):
    """`500.003.02 System is busy. Please try again in few minutes.`"""


class DarajaUnavailable(Exception):
    """Daraja could not be reached, timed out, or answered with something that is not Daraja's.

    `maybe_sent` is True when an STK push may have reached Daraja all the same (a time-out or a
    broken answer after the request went out): the customer may get the prompt and pay."""

    def __init__(self, message: str, *, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent
