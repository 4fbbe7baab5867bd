"""The simulator's journal never stores a secret, whatever field a client puts it in."""

import json

from simulator.journal import Journal


def test_secret_named_fields_are_masked_in_any_letter_case():
    journal = Journal()
    entry_id = journal.add(at=0.0, kind="request", method="POST", url="/x", status=200, duration_ms=1.0,
                           request_headers={"Authorization": "Bearer abcdefghijklmnop"},
                           request_body={"Password": "MTc0Mzc5c2VjcmV0", "Passkey": "bfb279f9aa9bdbcf",
                                         "nested": {"PASSKEY": "bfb279f9aa9bdbcf"}},
                           response_body={"access_token": "c9SQxWWhmdVRlyh0zh8gZDTkubVF", "expires_in": "3599"})
    entry = journal.get(entry_id)
    assert entry is not None
    assert journal.entries() == [entry]  # read either way, the same masked entry
    text = json.dumps(entry.to_json())
    for secret in ("MTc0Mzc5c2VjcmV0", "bfb279f9aa9bdbcf", "abcdefghijklmnop", "c9SQxWWhmdVRlyh0zh8gZDTkubVF"):
        assert secret not in text
    assert entry.request_headers["Authorization"] == "Bearer …"
    assert entry.response_body["expires_in"] == "3599"


def test_known_secret_values_are_masked_wherever_they_appear():
    journal = Journal(secrets=["my-consumer-secret", "passkey-value-123"])
    journal.add(at=0.0, kind="request", method="POST", url="/x?key=passkey-value-123", status=400,
                duration_ms=1.0, request_body="raw text with my-consumer-secret inside",
                response_body={"echo": ["passkey-value-123"]})
    [entry] = journal.entries(kind="request")
    text = json.dumps(entry.to_json())
    assert "my-consumer-secret" not in text and "passkey-value-123" not in text
    assert entry.request_body == "raw text with … inside"


def test_every_secret_name_carries_a_marker_so_the_quick_check_never_skips_one():
    from simulator.journal import _SECRET_IN_TEXT, SECRET_FIELDS, SECRET_MARKERS, redact_body
    assert all(any(marker in name for marker in SECRET_MARKERS) for name in SECRET_FIELDS)
    texts = ["254712345678", "Bearer …", "application/json", "wrk", "Password=abc123&x=1",
             '{"PassKey": "bfb279f9"}', "consumer_SECRET: hunter22", "INITIATORPASSWORD=zz", "paſsword=abc123",
             "Paſskey: k1", "ſecuritycredential=xyz", "nothing secret-free here", "a,b&c", "ACCESS_TOKEN=t0k"]
    for text in texts:
        assert redact_body(text) == _SECRET_IN_TEXT.sub(r"\1…", text), text
    assert redact_body("paſsword=abc123") == "paſsword=…"  # IGNORECASE's long s: still masked


def test_an_entry_is_masked_once_when_first_read_and_the_unmasked_values_are_not_kept():
    """Entries are masked when read, not when recorded (most are never read); once read, the
    journal holds only the masked copy, and what the caller handed it is left as it was."""
    journal = Journal(secrets=["passkey-value-123"])
    sent = {"Password": "MTc0Mzc5c2VjcmV0", "note": "passkey-value-123"}
    entry_id = journal.add(at=0.0, kind="callback", method="POST", url="/cb", status=200, duration_ms=1.0,
                           request_body=sent, checkout_request_id="ws_CO_1")
    assert journal.entries(checkout_request_id="ws_CO_2") == []
    first = journal.get(entry_id)
    assert first is not None and first.request_body == {"Password": "MTc0…", "note": "…"}
    assert journal.get(entry_id) is first and journal.entries(checkout_request_id="ws_CO_1") == [first]
    [recorded] = journal._entries
    assert recorded._fields is None  # the unmasked values are gone
    assert sent == {"Password": "MTc0Mzc5c2VjcmV0", "note": "passkey-value-123"}  # the sender's own body, untouched
