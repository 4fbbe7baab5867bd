"""Daraja's STK ResultCodes with the texts Daraja itself sends (callback and, where it differs, query).

The wordings that changed over time come from the profile (simulator/profiles.py)."""

from __future__ import annotations

from .profiles import Profile

# code -> (callback ResultDesc, query ResultDesc); 1, 1032 and 1037 changed wording: see profiles.py

RESULT_TEXTS: dict[str, tuple[str, str]] = {
    "0": ("The service request is processed successfully.", "The service request is processed successfully."),
    "2": ("Declined due to limit rule.", "Declined due to limit rule."),
    "3": ("Declined due to limit rule: greater than the maximum transaction amount.",
          "Declined due to limit rule: greater than the maximum transaction amount."),
    "4": ("Declined due to limit rule: would exceed daily transfer limit.",
          "Declined due to limit rule: would exceed daily transfer limit."),
    "8": ("Declined due to limit rule: would exceed the maximum balance.",
          "Declined due to limit rule: would exceed the maximum balance."),
    "17": ("Rule limited.", "Rule limited."),
    "26": ("Traffic blocking condition in place", "Traffic blocking condition in place"),
    "1001": ("Unable to lock subscriber, a transaction is already in process for the current subscriber",
             "Unable to lock subscriber, a transaction is already in process for the current subscriber"),
    "1019": ("Transaction has expired", "Transaction has expired"),
    "1025": ("An error occurred while sending a push request.", "An error occurred while sending a push request."),
    "1031": ("Request cancelled by user", "Request cancelled by user"),
    "2001": ("The initiator information is invalid.", "The initiator information is invalid."),
    "2028": ("The request is not permitted according to product assignment.",
             "The request is not permitted according to product assignment."),
    "8006": ("The security credential is locked.", "The security credential is locked."),
    "9999": ("An error occurred while sending a push request.", "An error occurred while sending a push request."),
    "SFC_IC0003": ("The operator does not exist.", "The operator does not exist."),
    "E3008": ("Error, the user has a bad debt contract.", "Error, the user has a bad debt contract."),
}

# Daraja's real query answer carries this typo ("successsfully"): clients match on it.
QUERY_ACCEPTED = "The service request has been accepted successsfully"


def _texts(code: str, profile: Profile) -> tuple[str, str] | None:
    return profile.result_texts.get(code) or RESULT_TEXTS.get(code)


def callback_desc(code: str, profile: Profile) -> str:
    texts = _texts(code, profile)
    return texts[0] if texts else "Request failed"


def query_desc(code: str, profile: Profile) -> str:
    texts = _texts(code, profile)
    return texts[1] if texts else "Request failed"
