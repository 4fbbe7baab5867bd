"""One class per error Daraja returns, with its real HTTP status, `errorCode` and `errorMessage`.

Models raise them; `responses.render_error` is the one place that turns them into bytes.
"""

from __future__ import annotations


class DarajaException(Exception):
    http_status = 500
    error_code = "500.003.1001"
    error_message = "Internal Server Error"
    reason: str | None = None  # HTTP reason phrase, where Daraja's differs from the standard one
    empty_body = False

    def __init__(self, error_message: str | None = None, *, hint: str | None = None,
                 request_id: str | None = None) -> None:
        if error_message is not None:
            self.error_message = error_message
        # A hint for the developer (never part of Daraja's body): sent as a header and logged.
        self.hint = hint
        self.request_id = request_id
        super().__init__(f"{self.error_code} {self.error_message}")


class InvalidAccessToken(DarajaException):
    http_status, error_code, error_message = 404, "404.001.03", "Invalid Access Token"
    reason = "Resource not found"


class ResourceNotFound(DarajaException):
    http_status, error_code, error_message = 404, "404.001.01", "Resource not found"


class MethodNotAllowed(DarajaException):
    http_status, error_code = 405, "405.001"

    def __init__(self, method: str) -> None:
        super().__init__(f"{method} Method Not Allowed")


class InvalidField(DarajaException):
    """`400.002.02 Bad Request - Invalid <Field>`: the suffix names the field."""

    http_status, error_code = 400, "400.002.02"

    def __init__(self, field: str, *, hint: str | None = None) -> None:
        self.field = field
        super().__init__(f"Bad Request - Invalid {field}", hint=hint)


class InvalidRequestPayload(DarajaException):
    http_status, error_code, error_message = 400, "400.002.05", "Invalid Request Payload"


class InvalidGrantType(DarajaException):
    http_status, error_code, error_message = 400, "400.008.02", "Invalid grant type passed"


class InvalidAuthentication(DarajaException):
    http_status, error_code, error_message = 400, "400.008.01", "Invalid Authentication passed"


class BadClientCredentials(DarajaException):
    """Wrong consumer key or secret: Daraja answers 400 with an empty body."""

    http_status, error_code, error_message = 400, "", ""
    empty_body = True


class WrongCredentials(DarajaException):
    http_status, error_code, error_message = 500, "500.001.1001", "Wrong credentials"


class MerchantDoesNotExist(DarajaException):
    http_status, error_code, error_message = 500, "500.001.1001", "Merchant does not exist"


class SubscriberLocked(DarajaException):
    http_status, error_code = 500, "500.001.1001"
    error_message = "Unable to lock subscriber, a transaction is already in process for the current subscriber"


class TransactionBeingProcessed(DarajaException):
    """The STK query's older 'still pending' answer; its requestId echoes the CheckoutRequestID."""

    http_status, error_code, error_message = 500, "500.001.1001", "The transaction is being processed"


class InternalServerError(DarajaException):
    http_status, error_code, error_message = 500, "500.003.1001", "Internal Server Error"


class SystemBusy(DarajaException):
    http_status, error_code, error_message = 500, "500.003.02", "System is busy. Please try again in few minutes."


class SpikeArrestViolation(DarajaException):
    """Past the per-second limit. Daraja's envelope (legacy profile), or Apigee's fault (current)."""

    http_status, error_code, error_message = 500, "500.003.02", "Error Occurred: Spike Arrest Violation"

    def __init__(self, per_second: int = 0) -> None:
        super().__init__()
        self.apigee_faultstring = (
            f"Spike arrest violation. Allowed rate : MessageRate{{messagesPerPeriod={per_second}, "
            f"periodInMicroseconds=1000000, maxBurstMessageCount={float(per_second)}}}")


class QuotaViolation(DarajaException):
    http_status, error_code, error_message = 500, "500.003.03", "Quota Violation"
