"""Typed errors for what Daraja answers, keeping its `errorCode` and `errorMessage`."""

from __future__ import annotations


class DarajaError(Exception):
    """Daraja answered with its error envelope (`requestId`, `errorCode`, `errorMessage`)."""

    def __init__(self, http_status: int, error_code: str, error_message: str, request_id: str = "") -> None:
        super().__init__(f"{error_code} {error_message} (HTTP {http_status})")
        self.http_status = http_status
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id

    @property
    def invalid_token(self) -> bool:
        return self.error_code == "404.001.03"

    @property
    def subscriber_locked(self) -> bool:
        return self.error_code == "500.001.1001" and "unable to lock subscriber" in self.error_message.lower()

    @property
    def still_processing(self) -> bool:
        return self.error_code == "500.001.1001" and "being processed" in self.error_message.lower()

    @property
    def rate_limited(self) -> bool:
        return self.error_code in ("500.003.02", "500.003.03")


class DarajaAuthError(DarajaError):
    """OAuth refused the consumer key and secret (or the request)."""


class DarajaUnavailable(Exception):
    """Daraja could not be reached, timed out, or answered with something that is not Daraja's.

    `maybe_sent` is True when an STK push may have reached Daraja all the same (a time-out or a
    broken answer after the request went out): the customer may get the prompt and pay."""

    def __init__(self, message: str, *, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent
