"""Which Daraja the simulator speaks: today's (`current`, the default) or the one before late 2025
(`legacy`), chosen by SIMULATOR_PROFILE.

Only what changed over time differs between the two; what has always been so (Amount written
`1.00`, compact callback JSON, the checks of PhoneNumber and CallBackURL …) is the same in both.
docs/simulator-behaviour.md gives each row its evidence; tests/contract/golden holds the captures.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Profile:
    name: str
    # How the STK query answers while the prompt is open: "4999" (HTTP 200, ResultCode "4999",
    # 2025-26 sandbox write-ups) or "500" (HTTP 500, 500.001.1001 "The transaction is being processed").
    query_pending_style: str
    # ResultCode -> (callback ResultDesc, query ResultDesc) where the wording moved on.
    result_texts: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Past SIMULATOR_SPIKE_ARREST_PER_SECOND: "apigee" (HTTP 429, Apigee's fault body, as clients
    # written since Daraja 3.0 parse it) or "envelope" (HTTP 500, 500.003.02 in Daraja's envelope).
    spike_arrest: str = "envelope"
    # The handset's confirmation SMS: "2025" (with the day's remaining limit) or "classic".
    sms: str = "classic"


CURRENT = Profile(
    name="current",
    query_pending_style="4999",
    result_texts={
        # Production since late 2025; the 2026 sandbox.
        "1": ("The balance is insufficient for the transaction.", "The balance is insufficient for the transaction."),
        "1032": ("Request Cancelled by user.", "Request Cancelled by user."),
        "1037": ("DS timeout user cannot be reached.", "DS timeout user cannot be reached."),
    },
    spike_arrest="apigee",
    sms="2025",
)

LEGACY = Profile(
    name="legacy",
    query_pending_style="500",
    result_texts={
        # Raw callbacks and query answers printed from 2018 to 2024 (ResultCode 1: up to 2022).
        "1": ("The balance is insufficient for the transaction", "The balance is insufficient for the transaction"),
        "1032": ("Request cancelled by user", "Request cancelled by user"),
        "1037": ("DS timeout user cannot be reached", "No response from user."),
    },
    spike_arrest="envelope",
    sms="classic",
)

PROFILES = {p.name: p for p in (CURRENT, LEGACY)}
