"""The simulator's own settings: what it reads, its defaults, its refusals (one line naming the
setting), secrets kept out of repr, and the shop's settings playing no part."""

from __future__ import annotations

import pytest
import requests

from simulator.settings import (
    SANDBOX_PASSKEY,
    SimulatorConfigError,
    SimulatorSettings,
    load_simulator_settings,
    setting_names,
)
from simulator.testing import start_simulator
from tests.daraja_http import DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET

SECRET = "zz-consumer-secret-7f3a9c"
PASSKEY = "zz-passkey-e41b0d7c"
KEY = "zz-consumer-key-19ab"

# Settings of the shop that the simulator has nothing to do with, each of which the gateway refuses.
SHOP_SETTINGS = [
    pytest.param({"DATABASE_URL": "postgres://x/y"}, id="postgres"),
    pytest.param({"SHOP_API_KEY": "too-short"}, id="short-shop-api-key"),
    pytest.param({"MPESA_ENV": "production"}, id="production-without-credentials"),
    pytest.param({"CALLBACK_URL": "https://x/"}, id="callback-without-path"),
]


def refusal(env: dict[str, str]) -> str:
    with pytest.raises(SimulatorConfigError) as info:
        load_simulator_settings(env)
    message = str(info.value)
    assert "\n" not in message and message.strip()
    return message


# -- defaults ---------------------------------------------------------------------------------------

def test_empty_environment_gives_the_defaults_written_in_the_dataclass():
    settings = load_simulator_settings({})
    assert settings == SimulatorSettings()
    assert (settings.consumer_key, settings.consumer_secret) == (DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)
    assert settings.merchants == {"174379": SANDBOX_PASSKEY}
    assert (settings.host, settings.port, settings.business_name) == ("127.0.0.1", 3001, "Demo Shop")
    assert (settings.pin, settings.auto_answer_delay, settings.prompt_lifetime) == ("12345", 3.0, 60.0)
    assert (settings.callback_delay, settings.late_callback_delay, settings.callback_timeout) == (0.5, 20.0, 10.0)
    assert (settings.token_lifetime, settings.query_pending_style, settings.lock_subscriber) == (3599, "", True)
    assert (settings.profile, settings.pending_style, settings.account_reference_max) == ("current", "4999", 0)
    assert settings.max_body_bytes == 64 * 1024


def test_blank_values_take_the_default():
    assert load_simulator_settings({name: "" for name in setting_names()}) == SimulatorSettings()


@pytest.mark.parametrize("name, raw, field, value", [
    ("SIMULATOR_PIN", "2468", "pin", "2468"),
    ("SIMULATOR_AUTO_ANSWER_SECONDS", "0.2", "auto_answer_delay", 0.2),
    ("SIMULATOR_PROMPT_LIFETIME_SECONDS", "2", "prompt_lifetime", 2.0),
    ("SIMULATOR_CALLBACK_DELAY_SECONDS", "0", "callback_delay", 0.0),
    ("SIMULATOR_LATE_CALLBACK_SECONDS", "1.5", "late_callback_delay", 1.5),
    ("SIMULATOR_CALLBACK_TIMEOUT_SECONDS", "5", "callback_timeout", 5.0),
    ("SIMULATOR_TOKEN_LIFETIME_SECONDS", "120", "token_lifetime", 120),
    ("SIMULATOR_QUERY_PENDING_STYLE", "4999", "query_pending_style", "4999"),
    ("SIMULATOR_LOCK_SUBSCRIBER", "off", "lock_subscriber", False),
    ("SIMULATOR_ACCOUNT_REFERENCE_MAX", "15", "account_reference_max", 15),
    ("SIMULATOR_SCENARIOS_FILE", " extra.json ", "scenarios_file", "extra.json"),
    ("SIMULATOR_TILLS", "600123:174379, 600124:600999", "tills", (("600123", "174379"), ("600124", "600999"))),
    ("SIMULATOR_SINGLE_TOKEN", "Yes", "single_token", True),
    ("SIMULATOR_CALLBACK_RETRIES", "3", "callback_retries", 3),
    ("SIMULATOR_CALLBACK_RETRY_DELAY_SECONDS", "0.1", "callback_retry_delay", 0.1),
    ("SIMULATOR_SLOW_SECONDS", "1", "slow_seconds", 1.0),
    ("SIMULATOR_TIMEOUT_SECONDS", "2", "timeout_seconds", 2.0),
    ("SIMULATOR_SPIKE_ARREST_PER_SECOND", "5", "spike_arrest_per_second", 5),
    ("SIMULATOR_QUOTA", "100", "quota", 100),
    ("BUSINESS_NAME", "Mama Mboga", "business_name", "Mama Mboga"),
    ("HOST", "0.0.0.0", "host", "0.0.0.0"),
    ("PORT", "8089", "port", 8089),
    ("MPESA_BUSINESS_SHORTCODE", "600999", "shortcode", "600999"),
    ("MPESA_TILL_NUMBER", "600123", "till_number", "600123"),
])
def test_each_setting_is_read_into_its_field(name, raw, field, value):
    assert getattr(load_simulator_settings({name: raw}), field) == value


def test_the_credentials_it_accepts_come_from_the_shops_credential_settings():
    settings = load_simulator_settings({"MPESA_CONSUMER_KEY": KEY, "MPESA_CONSUMER_SECRET": SECRET})
    assert (settings.consumer_key, settings.consumer_secret) == (KEY, SECRET)


def test_merchants_are_the_sandbox_paybill_the_configured_one_and_any_extras():
    settings = load_simulator_settings({"MPESA_BUSINESS_SHORTCODE": "600999", "MPESA_PASSKEY": PASSKEY,
                                        "SIMULATOR_MERCHANTS": "600111:k1, 600222:k2"})
    assert settings.merchants == {"174379": SANDBOX_PASSKEY, "600999": PASSKEY, "600111": "k1", "600222": "k2"}
    assert list(settings.merchants)[0] == "174379"


def test_a_configured_shortcode_without_passkey_gets_the_sandbox_passkey():
    assert load_simulator_settings({"MPESA_BUSINESS_SHORTCODE": "600999"}).merchants["600999"] == SANDBOX_PASSKEY


def test_the_till_number_belongs_to_the_configured_shortcode():
    settings = load_simulator_settings({"MPESA_BUSINESS_SHORTCODE": "600999", "MPESA_TILL_NUMBER": "600123",
                                        "SIMULATOR_TILLS": "700001:700000"})
    assert settings.all_tills == {"700001": "700000", "600123": "600999"}
    assert load_simulator_settings({}).all_tills == {}


@pytest.mark.parametrize("env", SHOP_SETTINGS)
def test_the_shops_settings_play_no_part(env):
    assert load_simulator_settings(env) == SimulatorSettings()


# -- refusals -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["SIMULATOR_PROMPT_LIFETIME_SECONDS", "SIMULATOR_CALLBACK_TIMEOUT_SECONDS"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_intervals_that_are_not_positive_are_refused(name, value):
    assert name in refusal({name: value})


@pytest.mark.parametrize("name", ["SIMULATOR_AUTO_ANSWER_SECONDS", "SIMULATOR_CALLBACK_DELAY_SECONDS",
                                  "SIMULATOR_LATE_CALLBACK_SECONDS", "SIMULATOR_CALLBACK_RETRY_DELAY_SECONDS",
                                  "SIMULATOR_SLOW_SECONDS", "SIMULATOR_TIMEOUT_SECONDS"])
@pytest.mark.parametrize("value", ["-1", "nan", "inf", "later"])
def test_delays_that_are_not_seconds_are_refused(name, value):
    assert refusal({name: value}) == f"{name} must be a number of seconds (got {value!r})"


@pytest.mark.parametrize("name, value, message", [
    ("PORT", "70000", "PORT must be a whole number from 1 to 65535 (got '70000')"),
    ("PORT", "abc", "PORT must be a whole number from 1 to 65535 (got 'abc')"),
    ("SIMULATOR_TOKEN_LIFETIME_SECONDS", "0",
     "SIMULATOR_TOKEN_LIFETIME_SECONDS must be a whole number from 1 to 86400"),
    ("SIMULATOR_ACCOUNT_REFERENCE_MAX", "101", "SIMULATOR_ACCOUNT_REFERENCE_MAX must be a whole number from 0 to 100"),
    ("SIMULATOR_PROFILE", "2019", "SIMULATOR_PROFILE must be one of current, legacy"),
    ("SIMULATOR_CALLBACK_RETRIES", "11", "SIMULATOR_CALLBACK_RETRIES must be a whole number from 0 to 10"),
    ("SIMULATOR_SPIKE_ARREST_PER_SECOND", "-1", "SIMULATOR_SPIKE_ARREST_PER_SECOND must be a whole number"),
    ("SIMULATOR_QUOTA", "1.5", "SIMULATOR_QUOTA must be a whole number"),
    ("SIMULATOR_PIN", "12", "SIMULATOR_PIN must be 4 to 6 digits"),
    ("SIMULATOR_PIN", "12a45", "SIMULATOR_PIN must be 4 to 6 digits"),
    ("SIMULATOR_LOCK_SUBSCRIBER", "maybe", "SIMULATOR_LOCK_SUBSCRIBER must be true or false (got 'maybe')"),
    ("SIMULATOR_QUERY_PENDING_STYLE", "200", "SIMULATOR_QUERY_PENDING_STYLE must be one of 500, 4999 (got '200')"),
    ("SIMULATOR_MERCHANTS", "600111", "SIMULATOR_MERCHANTS must be shortcode:passkey pairs separated by commas"),
    ("SIMULATOR_MERCHANTS", "abc:key", "SIMULATOR_MERCHANTS must be shortcode:passkey pairs separated by commas"),
    ("SIMULATOR_TILLS", "600123:store", "SIMULATOR_TILLS must be till:store_shortcode pairs separated by commas"),
    ("MPESA_BUSINESS_SHORTCODE", "12", "MPESA_BUSINESS_SHORTCODE must be 5 to 7 digits"),
])
def test_unusable_values_are_refused_naming_the_setting(name, value, message):
    assert refusal({name: value}).startswith(message)


@pytest.mark.parametrize("present", ["MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET"])
def test_only_one_of_key_and_secret_is_refused(present):
    message = refusal({present: SECRET})
    assert "MPESA_CONSUMER_KEY" in message and "MPESA_CONSUMER_SECRET" in message
    assert SECRET not in message


def test_a_refused_merchant_list_never_shows_a_passkey():
    assert PASSKEY not in refusal({"SIMULATOR_MERCHANTS": f"600111:{PASSKEY},nonsense"})


# -- secrets ------------------------------------------------------------------------------------------

def test_repr_hides_the_consumer_secret_and_every_passkey():
    text = repr(load_simulator_settings({"MPESA_CONSUMER_KEY": KEY, "MPESA_CONSUMER_SECRET": SECRET,
                                         "MPESA_PASSKEY": PASSKEY, "SIMULATOR_MERCHANTS": f"600111:{PASSKEY}x"}))
    assert KEY in text  # the key is not secret: repr really renders the credentials
    for secret in (SECRET, PASSKEY, SANDBOX_PASSKEY):
        assert secret not in text


# -- starting from these settings alone ---------------------------------------------------------------

@pytest.mark.parametrize("env", SHOP_SETTINGS)
def test_start_simulator_ignores_the_shops_settings(env):
    with start_simulator(**env) as daraja:
        resp = requests.get(f"{daraja.base_url}/oauth/v1/generate", params={"grant_type": "client_credentials"},
                            auth=(daraja.consumer_key, daraja.consumer_secret), timeout=5)
        assert resp.status_code == 200, resp.text
        assert (daraja.consumer_key, daraja.shortcode) == (DEMO_CONSUMER_KEY, "174379")


@pytest.mark.parametrize("env, pending", [
    ({}, "4999"), ({"SIMULATOR_PROFILE": "legacy"}, "500"),
    ({"SIMULATOR_QUERY_PENDING_STYLE": "500"}, "500"),
    ({"SIMULATOR_PROFILE": "legacy", "SIMULATOR_QUERY_PENDING_STYLE": "4999"}, "4999"),
])
def test_the_profile_chooses_the_pending_style_unless_it_is_set(env, pending):
    assert load_simulator_settings(env).pending_style == pending
