"""Identifiers in the shapes Daraja gives them: access tokens, CheckoutRequestIDs,
MerchantRequestIDs and M-Pesa receipt numbers."""

from __future__ import annotations

import itertools
import random
import secrets
import string
from collections.abc import Container

from .wire import nairobi_time

_ALPHANUMERIC = string.ascii_letters + string.digits
_RECEIPT_CHARS = string.ascii_uppercase + string.digits
# A receipt's first three characters are the date: the year as a letter (2006 = A, so 2017 = L and
# 2026 = U, wrapping after Z), the month as a letter (A = January) and the day (1-9, then A = 10 …).
_MONTHS = string.ascii_uppercase[:12]
_DAYS = string.digits[1:] + string.ascii_uppercase[:22]


class DarajaIds:
    """Makes identifiers; the random ones come from `rng` (a seeded one gives repeatable runs)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._request_seq = itertools.count(rng.randrange(100_000, 900_000))

    def access_token(self) -> str:
        """28 letters and digits, like every token Daraja has been seen to issue."""
        return "".join(self._rng.choices(_ALPHANUMERIC, k=28))

    def request_id(self) -> str:
        """The 2024+ MerchantRequestID and error requestId: three groups of 4 hex digits, then 12
        more and a sequence number (`8838-48ab-bdad-1f4dc54697c831554`)."""
        digits = secrets.token_hex(12)
        groups = (digits[0:4], digits[4:8], digits[8:12], digits[12:] + str(next(self._request_seq)))
        return "-".join(groups)

    @staticmethod
    def checkout_request_id(msisdn: str, at: float, taken: Container[str]) -> str:
        """`ws_CO_` + DDMMYYYYHHmmss (Nairobi) + the milliseconds unpadded + the subscriber number
        without 254; within one second, the next free millisecond."""
        moment = nairobi_time(at)
        # strftime("%d%m%Y%H%M%S"), written out: half its time, on every push
        m = moment
        stamp = f"{m.day:02d}{m.month:02d}{m.year:04d}{m.hour:02d}{m.minute:02d}{m.second:02d}"
        millis = moment.microsecond // 1000
        for offset in range(1000):
            candidate = f"ws_CO_{stamp}{(millis + offset) % 1000}{msisdn[3:]}"
            if candidate not in taken:
                return candidate
        raise RuntimeError("no free CheckoutRequestID in this second")

    def receipt(self, at: float, taken: Container[str]) -> str:
        """10 characters: the date in three (see above), then 7 random, none of them in `taken`."""
        moment = nairobi_time(at)
        date = string.ascii_uppercase[(moment.year - 2006) % 26] + _MONTHS[moment.month - 1] + _DAYS[moment.day - 1]
        while True:
            receipt = date + "".join(self._rng.choices(_RECEIPT_CHARS, k=7))
            if receipt not in taken:
                return receipt
