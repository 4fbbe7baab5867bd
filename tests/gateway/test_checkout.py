"""Checkout input rules: phone normalisation, amount limits, field trimming and masking."""

from __future__ import annotations

import pytest

from gateway.checkout import (
    INVALID_PHONE,
    Checkout,
    CheckoutError,
    mask_phone,
    normalise_phone,
    parse_amount,
    parse_checkout,
)

AMOUNT_MESSAGE = "Amount must be between 1 and 150,000"


# -- phone ------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("0712345678", "254712345678"),
    ("0112345678", "254112345678"),
    ("254712345678", "254712345678"),
    ("254112345678", "254112345678"),
    ("+254712345678", "254712345678"),
    ("+254112345678", "254112345678"),
    ("0712 345 678", "254712345678"),
    ("0712-345-678", "254712345678"),
    ("+254 712 345 678", "254712345678"),
    ("+254-112-345-678", "254112345678"),
    ("254 7 1 2 3 4 5 6 7 8", "254712345678"),
    ("  0712345678  ", "254712345678"),
    ("0112\t345\t678", "254112345678"),
])
def test_accepted_phone_forms_normalise_to_254_prefix(raw, expected):
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize("raw", [
    "123456789",       # 9 digits, no prefix
    "712345678",       # subscriber number without 0 or 254
    "0812345678",      # 08 is not a Safaricom prefix
    "254812345678",
    "+254812345678",
    "07123456789",     # one digit too many
    "071234567",       # one digit too few
    "2547123456789",
    "25471234567",
    "07123456ab",
    "phone",
    "",
    "   ",
    "+0712345678",
    "00254712345678",
    "0712.345.678",    # dots are not tolerated separators
    "(0712)345678",
])
def test_rejected_phone_strings_raise_invalid_phone_format(raw):
    with pytest.raises(CheckoutError) as info:
        normalise_phone(raw)
    assert info.value.message == "Invalid phone number format"
    assert str(info.value) == "Invalid phone number format"
    assert info.value.field == "phone"


@pytest.mark.parametrize("raw", [None, 712345678, 254712345678, 712345678.0, ["0712345678"], {"phone": "0712345678"}])
def test_non_string_phone_values_are_rejected(raw):
    with pytest.raises(CheckoutError) as info:
        normalise_phone(raw)
    assert info.value.message == INVALID_PHONE == "Invalid phone number format"


def test_phone_with_non_ascii_digits_is_rejected():
    with pytest.raises(CheckoutError):
        normalise_phone("07\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668")


# -- amount -----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    (1, 1), (100, 100), (149_999, 149_999), (150_000, 150_000),
    (100.0, 100), ("100", 100), (" 100 ", 100), (1.0, 1),
])
def test_whole_amounts_within_limit_are_accepted(raw, expected):
    value = parse_amount(raw, 150_000)
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize("raw", [0, -1, 150_001, 1.5, "1.5", True, False, None, "abc", [], "", "-5",
                                 "0", 0.0, 100.5, float("nan"), float("inf"), {"amount": 1}, "1e3"])
def test_invalid_amounts_are_rejected_with_the_contract_message(raw):
    with pytest.raises(CheckoutError) as info:
        parse_amount(raw, 150_000)
    assert info.value.message == AMOUNT_MESSAGE
    assert str(info.value) == AMOUNT_MESSAGE
    assert info.value.field == "amount"


def test_amount_message_follows_a_different_cap():
    assert parse_amount(70_000, 70_000) == 70_000
    with pytest.raises(CheckoutError) as info:
        parse_amount(70_001, 70_000)
    assert info.value.message == "Amount must be between 1 and 70,000"


def test_amount_with_superscript_digit_is_rejected_as_checkout_error():
    with pytest.raises(CheckoutError) as info:
        parse_amount("\u00b2", 150_000)
    assert info.value.message == AMOUNT_MESSAGE


# -- parse_checkout ---------------------------------------------------------------------------

def test_parse_checkout_normalises_phone_and_amount():
    checkout = parse_checkout({"phone": "0712 345 678", "amount": "250", "accountReference": "CART_1",
                               "description": "Shoes"}, 150_000)
    assert checkout == Checkout(phone="254712345678", amount=250, account_reference="CART_1", description="Shoes")


def test_parse_checkout_trims_account_reference_to_12_chars():
    checkout = parse_checkout({"phone": "0712345678", "amount": 1, "accountReference": "CART_1234567890"}, 150_000)
    assert checkout.account_reference == "CART_1234567"
    assert len(checkout.account_reference) == 12


def test_parse_checkout_trims_description_to_13_chars():
    checkout = parse_checkout({"phone": "0712345678", "amount": 1, "description": "Payment for order 42"}, 150_000)
    assert checkout.description == "Payment for o"
    assert len(checkout.description) == 13


def test_parse_checkout_strips_surrounding_whitespace_before_trimming():
    checkout = parse_checkout({"phone": "0712345678", "amount": 1, "accountReference": "   CART 1   ",
                               "description": " Order 1234567 89"}, 150_000)
    assert checkout.account_reference == "CART 1"
    assert checkout.description == "Order 1234567"


def test_parse_checkout_defaults_missing_reference_and_description():
    checkout = parse_checkout({"phone": "0712345678", "amount": 1}, 150_000)
    assert checkout.account_reference == "Payment"
    assert checkout.description == "Payment"


def test_parse_checkout_defaults_null_or_blank_reference_and_description():
    checkout = parse_checkout({"phone": "0712345678", "amount": 1, "accountReference": None,
                               "description": "   "}, 150_000)
    assert checkout.account_reference == "Payment"
    assert checkout.description == "Payment"


@pytest.mark.parametrize("field", ["accountReference", "description"])
@pytest.mark.parametrize("value", [123, ["x"], {"a": 1}, True])
def test_parse_checkout_rejects_non_string_text_fields_naming_the_field(field, value):
    with pytest.raises(CheckoutError) as info:
        parse_checkout({"phone": "0712345678", "amount": 1, field: value}, 150_000)
    assert info.value.field == field
    assert field in info.value.message


def test_parse_checkout_reports_the_phone_before_the_amount():
    with pytest.raises(CheckoutError) as info:
        parse_checkout({"phone": "123", "amount": 0}, 150_000)
    assert info.value.message == INVALID_PHONE


def test_parse_checkout_rejects_missing_amount():
    with pytest.raises(CheckoutError) as info:
        parse_checkout({"phone": "0712345678"}, 150_000)
    assert info.value.message == AMOUNT_MESSAGE


def test_parse_checkout_uses_the_configured_cap():
    with pytest.raises(CheckoutError) as info:
        parse_checkout({"phone": "0712345678", "amount": 70_001}, 70_000)
    assert info.value.message == "Amount must be between 1 and 70,000"


# -- mask_phone -------------------------------------------------------------------------------

def test_mask_phone_hides_the_middle_digits():
    assert mask_phone("254712345678") == "2547****5678"


def test_mask_phone_keeps_prefix_and_last_four_for_other_lengths():
    assert mask_phone("254112345678") == "2541****5678"
    assert mask_phone("0712345678") == "0712**5678"


def test_mask_phone_leaves_short_values_alone():
    assert mask_phone("12345678") == "12345678"
    assert mask_phone("") == ""
