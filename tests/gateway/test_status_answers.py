"""The status answer's JSON, encoded once per answer (`status_json`): always exactly what
`status_body` says for the payment asked about, whatever was asked before."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import handlers
from gateway.handlers import status_body, status_json, status_key
from gateway.storage import Transaction

TEXT = st.text(max_size=12)
OPTIONAL = st.none() | TEXT
RESULT_CODES = st.none() | st.sampled_from(["0", "1", "1032", "1037", "2001", "timeout", "4999"]) | TEXT

payments = st.builds(
    Transaction,
    checkout_request_id=st.sampled_from(["ws_CO_1", "ws_CO_2"]),
    merchant_request_id=TEXT,
    phone=st.sampled_from(["254712345678", "254700000000", "2547"]),
    amount=st.sampled_from([1, 100, 250_000]) | st.sampled_from([1.0, 100.0]),
    account_reference=TEXT,
    description=TEXT,
    status=st.sampled_from(["pending", "completed", "failed"]),
    result_code=RESULT_CODES,
    result_desc=OPTIONAL,
    receipt=st.none() | st.sampled_from(["UAB1CD2EF3", "UAB1CD2EF4"]),
    transaction_date=OPTIONAL,
    settled_by=st.none() | st.sampled_from(["callback", "query", "timeout"]),
    late=st.booleans(),
    callback_count=st.integers(0, 3),
    raw_callback=OPTIONAL,
    query_attempts=st.integers(0, 3),
    next_query_at=st.none() | st.floats(0, 2e9),
    created_at=TEXT,
    updated_at=TEXT,
    settled_at=OPTIONAL,
    token_hash=OPTIONAL,
    order_id=OPTIONAL,
)


@settings(max_examples=400)
@given(st.lists(st.tuples(payments, st.booleans()), min_size=1, max_size=12))
def test_every_answer_is_what_status_body_says_for_that_payment(asked):
    handlers._ANSWERS.clear()
    for tx, detailed in asked:  # repeats and near-misses in any order: each answer stands on its own
        assert status_json(tx, detailed) == json.dumps(status_body(tx, detailed)).encode()


@settings(max_examples=500)
@given(payments, payments, st.booleans())
def test_the_key_changes_with_every_field_the_answer_shows(tx, other, detailed):
    """Any one field changed (to `other`'s value) that changes the answer changes the key too: two
    payments that share a key get the same answer."""
    for field in dataclasses.fields(Transaction):
        changed = dataclasses.replace(tx, **{field.name: getattr(other, field.name)})
        if json.dumps(status_body(changed, detailed)) != json.dumps(status_body(tx, detailed)):
            assert status_key(changed, detailed) != status_key(tx, detailed), field.name


def test_the_answers_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(handlers, "ANSWERS_KEPT", 5)
    handlers._ANSWERS.clear()
    base = Transaction(checkout_request_id="ws_CO_0", merchant_request_id="m", phone="254712345678", amount=10,
                       account_reference="R", description="D")
    for i in range(12):
        tx = dataclasses.replace(base, checkout_request_id=f"ws_CO_{i}")
        assert json.loads(status_json(tx, False))["checkoutRequestId"] == f"ws_CO_{i}"
        assert len(handlers._ANSWERS) <= 5
