"""Settings: defaults per mode, refusals with one clear line, and secrets kept out of messages."""

from __future__ import annotations

import pytest

from gateway.config import (
    DEMO_CONSUMER_KEY,
    DEMO_CONSUMER_SECRET,
    PRODUCTION_BASE_URL,
    SANDBOX_BASE_URL,
    SANDBOX_PASSKEY,
    ConfigError,
    load_settings,
)

SECRET = "zz-consumer-secret-7f3a9c"
PASSKEY = "zz-passkey-e41b0d7c"
KEY = "zz-consumer-key-19ab"

SANDBOX = {"MPESA_ENV": "sandbox", "MPESA_CONSUMER_KEY": KEY, "MPESA_CONSUMER_SECRET": SECRET,
           "CALLBACK_URL": "https://shop.example.com/mpesa/callback"}
PRODUCTION = {**SANDBOX, "MPESA_ENV": "production", "MPESA_BUSINESS_SHORTCODE": "600999", "MPESA_PASSKEY": PASSKEY}


def refusal(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert "\n" not in message and message.strip()
    return message


# -- defaults ---------------------------------------------------------------------------------

def test_empty_environment_gives_simulator_defaults():
    settings = load_settings({})
    assert settings.mpesa_env == "simulator"
    assert settings.port == 3001
    assert settings.consumer_key == DEMO_CONSUMER_KEY
    assert settings.consumer_secret == DEMO_CONSUMER_SECRET
    assert settings.base_url == "http://127.0.0.1:3001/daraja"
    assert settings.callback_url == "http://127.0.0.1:3001/mpesa/callback"
    assert settings.shortcode == "174379"
    assert settings.passkey == SANDBOX_PASSKEY
    assert settings.transaction_type == "CustomerPayBillOnline"
    assert settings.max_amount == 150_000
    assert settings.simulator_mounted


def test_simulator_urls_follow_the_port():
    settings = load_settings({"PORT": "8080"})
    assert settings.base_url == "http://127.0.0.1:8080/daraja"
    assert settings.callback_url == "http://127.0.0.1:8080/mpesa/callback"


def test_simulator_urls_use_loopback_when_bound_to_all_interfaces():
    settings = load_settings({"HOST": "0.0.0.0"})
    assert settings.base_url == "http://127.0.0.1:3001/daraja"


def test_sandbox_uses_safaricom_sandbox_host_and_public_shortcode():
    settings = load_settings(SANDBOX)
    assert settings.base_url == SANDBOX_BASE_URL
    assert settings.shortcode == "174379"
    assert settings.passkey == SANDBOX_PASSKEY
    assert settings.consumer_secret == SECRET
    assert not settings.simulator_mounted


def test_production_uses_safaricom_api_host():
    settings = load_settings(PRODUCTION)
    assert settings.base_url == PRODUCTION_BASE_URL
    assert settings.shortcode == "600999"
    assert settings.passkey == PASSKEY
    assert settings.app_env == "production"


def test_mpesa_base_url_overrides_the_base_url():
    assert load_settings({"MPESA_BASE_URL": "http://127.0.0.1:8089/"}).base_url == "http://127.0.0.1:8089"
    assert load_settings({**SANDBOX, "MPESA_BASE_URL": "https://mock.example.com"}).base_url == "https://mock.example.com"


def test_buy_goods_sends_the_till_as_party_b():
    settings = load_settings({"MPESA_TRANSACTION_TYPE": "CustomerBuyGoodsOnline", "MPESA_TILL_NUMBER": "123456"})
    assert settings.party_b == "123456"
    assert load_settings({}).party_b == "174379"


def test_both_simulator_credentials_may_be_set():
    settings = load_settings({"MPESA_CONSUMER_KEY": KEY, "MPESA_CONSUMER_SECRET": SECRET})
    assert (settings.consumer_key, settings.consumer_secret) == (KEY, SECRET)


# -- refusals ---------------------------------------------------------------------------------

def test_unknown_mpesa_env_is_refused():
    assert "MPESA_ENV" in refusal({"MPESA_ENV": "staging"})


@pytest.mark.parametrize("port", ["abc", "0", "70000", "-1", "3001.5"])
def test_bad_port_is_refused(port):
    assert "PORT" in refusal({"PORT": port})


@pytest.mark.parametrize("missing", ["MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET"])
def test_sandbox_without_key_or_secret_is_refused(missing):
    env = {k: v for k, v in SANDBOX.items() if k != missing}
    assert missing in refusal(env)


def test_sandbox_without_callback_url_is_refused():
    env = {k: v for k, v in SANDBOX.items() if k != "CALLBACK_URL"}
    assert "CALLBACK_URL" in refusal(env)


@pytest.mark.parametrize("missing", ["MPESA_BUSINESS_SHORTCODE", "MPESA_PASSKEY"])
def test_production_without_shortcode_or_passkey_is_refused(missing):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    assert missing in refusal(env)


def test_production_with_plain_http_callback_is_refused():
    message = refusal({**PRODUCTION, "CALLBACK_URL": "http://shop.example.com/mpesa/callback"})
    assert "CALLBACK_URL" in message
    assert "https" in message


def test_production_without_credentials_is_refused():
    env = {k: v for k, v in PRODUCTION.items() if k not in ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET")}
    assert "MPESA_CONSUMER_KEY" in refusal(env)


def test_buy_goods_without_till_number_is_refused():
    assert "MPESA_TILL_NUMBER" in refusal({"MPESA_TRANSACTION_TYPE": "CustomerBuyGoodsOnline"})


@pytest.mark.parametrize("present", ["MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET"])
def test_only_one_of_key_and_secret_in_simulator_mode_is_refused(present):
    message = refusal({present: "something"})
    assert "MPESA_CONSUMER_KEY" in message and "MPESA_CONSUMER_SECRET" in message


@pytest.mark.parametrize("url", ["mysql://db/x", "sqlite://relative.db", "data.sqlite3", "postgresql://db",
                                 "postgresql:///x", "postgresql://db:port/x"])
def test_unsupported_database_url_is_refused(url):
    assert "DATABASE_URL" in refusal({"DATABASE_URL": url})


def test_sqlite_database_url_is_accepted():
    assert load_settings({"DATABASE_URL": "sqlite:///tmp/x.db"}).database_url == "sqlite:///tmp/x.db"


@pytest.mark.parametrize("url", ["postgresql://shop:secret@db.internal:5432/payments", "postgres://db/x"])
def test_postgresql_database_url_is_accepted(url):
    assert load_settings({"DATABASE_URL": url}).database_url == url


def test_bad_callback_url_in_simulator_mode_is_refused():
    assert "CALLBACK_URL" in refusal({"CALLBACK_URL": "not a url"})


def test_bad_base_url_override_is_refused():
    assert "MPESA_BASE_URL" in refusal({"MPESA_BASE_URL": "ftp://example.com"})


# -- secrets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("env", [
    pytest.param({**SANDBOX, "MPESA_ENV": "staging"}, id="unknown mode"),
    pytest.param({**SANDBOX, "PORT": "abc"}, id="bad port"),
    pytest.param({**SANDBOX, "MPESA_PASSKEY": PASSKEY, "CALLBACK_URL": ""}, id="sandbox no callback"),
    pytest.param({k: v for k, v in PRODUCTION.items() if k != "MPESA_BUSINESS_SHORTCODE"},
                 id="production no shortcode"),
    pytest.param({**PRODUCTION, "CALLBACK_URL": "http://shop.example.com/cb"}, id="production http callback"),
    pytest.param({**PRODUCTION, "MPESA_TRANSACTION_TYPE": "CustomerBuyGoodsOnline"}, id="buy goods no till"),
    pytest.param({**PRODUCTION, "DATABASE_URL": "mysql://db/x"}, id="bad database url"),
    pytest.param({**PRODUCTION, "MPESA_BUSINESS_SHORTCODE": "12"}, id="bad shortcode"),
    pytest.param({"MPESA_CONSUMER_SECRET": SECRET, "MPESA_PASSKEY": PASSKEY}, id="simulator secret only"),
])
def test_config_error_never_contains_the_secret_or_passkey(env):
    message = refusal(env)
    assert SECRET not in message
    assert PASSKEY not in message


@pytest.mark.parametrize("env", [
    PRODUCTION, {**SANDBOX, "MPESA_PASSKEY": PASSKEY},
    {"MPESA_CONSUMER_KEY": KEY, "MPESA_CONSUMER_SECRET": SECRET, "MPESA_PASSKEY": PASSKEY}])
def test_settings_repr_hides_the_secret_and_passkey(env):
    text = repr(load_settings(env))
    assert SECRET not in text
    assert PASSKEY not in text
    assert KEY in text  # the key is not secret; its presence shows repr really renders the credentials


def test_settings_repr_hides_the_default_sandbox_passkey():
    assert SANDBOX_PASSKEY not in repr(load_settings({}))


# -- settings that make no sense, and unsafe production set-ups -------------------------------

@pytest.mark.parametrize("name", ["RECONCILE_INTERVAL_SECONDS", "RECONCILE_MAX_INTERVAL_SECONDS",
                                  "PAYMENT_TIMEOUT_SECONDS", "DARAJA_TIMEOUT_SECONDS", "PUSH_LIMIT_WINDOW_SECONDS",
                                  "LOOKUP_LIMIT_WINDOW_SECONDS"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_intervals_that_are_not_positive_are_refused(name, value):
    assert name in refusal({name: value})


@pytest.mark.parametrize("value", ["0", "-1", "0.5", "1e-9", "nan", "inf", "10001", "soon"])
def test_a_query_rate_that_would_stall_the_reconciler_or_is_no_number_is_refused(value):
    # Under one a second, the budget would allow one query and then next to none: payments never
    # checked, never given up locally.
    assert "RECONCILE_QUERIES_PER_SECOND" in refusal({"RECONCILE_QUERIES_PER_SECOND": value})


@pytest.mark.parametrize("name", ["PUSH_LIMIT_PER_PHONE", "PUSH_LIMIT_PER_CLIENT", "LOOKUP_LIMIT_PER_CLIENT",
                                  "STREAM_LIMIT_PER_CLIENT", "STREAM_LIMIT_TOTAL"])
def test_negative_limits_are_refused(name):
    assert name in refusal({name: "-1"})


def test_stream_limits_cannot_be_zero():
    assert "STREAM_LIMIT_TOTAL" in refusal({"STREAM_LIMIT_TOTAL": "0"})


def test_max_reconcile_interval_below_the_interval_is_refused():
    message = refusal({"RECONCILE_INTERVAL_SECONDS": "30", "RECONCILE_MAX_INTERVAL_SECONDS": "10"})
    assert "RECONCILE_MAX_INTERVAL_SECONDS" in message


@pytest.mark.parametrize("url", ["https://shop.example.com", "https://shop.example.com/", "https://shop.example.com//"])
@pytest.mark.parametrize("env", [SANDBOX, PRODUCTION])
def test_callback_url_without_a_path_of_its_own_is_refused(env, url):
    assert "CALLBACK_URL needs a path of its own" in refusal({**env, "CALLBACK_URL": url})


def test_production_refuses_the_public_sandbox_passkey():
    message = refusal({**PRODUCTION, "MPESA_PASSKEY": SANDBOX_PASSKEY})
    assert "sandbox passkey" in message and SANDBOX_PASSKEY not in message


def test_sandbox_may_use_the_public_sandbox_passkey():
    assert load_settings({**SANDBOX, "MPESA_PASSKEY": SANDBOX_PASSKEY}).passkey == SANDBOX_PASSKEY


def test_trusted_proxies_are_addresses_or_networks():
    settings = load_settings({"TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8,::1"})
    assert settings.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8", "::1/128")
    assert "TRUSTED_PROXIES" in refusal({"TRUSTED_PROXIES": "localhost"})
