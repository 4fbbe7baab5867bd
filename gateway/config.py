"""Settings: read once from the environment (and `.env`), checked, then passed around.

`load_settings()` is the only place that reads `os.environ`. It refuses a configuration that
cannot work, with a `ConfigError` whose message is one line naming what to set.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

SANDBOX_BASE_URL = "https://sandbox.safaricom.co.ke"
PRODUCTION_BASE_URL = "https://api.safaricom.co.ke"
SANDBOX_SHORTCODE = "174379"
# Safaricom's published sandbox passkey: public, but still treated as a secret in logs.
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
# The credentials the gateway uses in simulator mode when none are configured (the simulator's demo pair).
DEMO_CONSUMER_KEY = "simulator-demo-consumer-key"
DEMO_CONSUMER_SECRET = "simulator-demo-consumer-secret"

MODES = ("simulator", "sandbox", "production")
TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
DEFAULT_DATABASE_URL = "sqlite:///data/mpesa.sqlite3"


class ConfigError(ValueError):
    """A setting is missing or unsafe; the message is one line that names what to set."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 3001
    app_env: str = "development"
    frontend_url: str = ""
    mpesa_env: str = "simulator"
    base_url: str = ""
    consumer_key: str = DEMO_CONSUMER_KEY
    consumer_secret: str = field(default=DEMO_CONSUMER_SECRET, repr=False)
    shortcode: str = SANDBOX_SHORTCODE
    passkey: str = field(default=SANDBOX_PASSKEY, repr=False)
    transaction_type: str = "CustomerPayBillOnline"
    till_number: str = ""
    callback_url: str = field(default="", repr=False)  # its path may be the callback's only secret
    database_url: str = DEFAULT_DATABASE_URL
    business_name: str = "Demo Shop"
    max_amount: int = 150_000
    daraja_timeout: float = 15.0
    reconcile_after: float = 20.0
    reconcile_interval: float = 10.0
    reconcile_max_interval: float = 60.0
    payment_timeout: float = 300.0
    max_body_bytes: int = 64 * 1024
    push_limit_per_phone: int = 5  # STK pushes to one phone per window; 0: no limit
    push_limit_per_client: int = 30  # STK pushes from one client address per window; 0: no limit
    push_limit_window: float = 300.0
    lookup_limit_per_client: int = 20  # lookups of unknown payment ids per client per window; 0: no limit
    lookup_limit_window: float = 60.0
    trusted_proxies: tuple[str, ...] = ()  # addresses/networks whose X-Forwarded-For is believed
    stream_limit_per_client: int = 10  # live-update streams open at once from one client address
    stream_limit_total: int = 1000  # and in all
    poll_interval: float = 3.0  # the pay page's status polling
    poll_timeout: float = 120.0
    usd_to_kes: float = 129.0

    @property
    def simulator_mounted(self) -> bool:
        return self.mpesa_env == "simulator"

    @property
    def public_host(self) -> str:
        """The host a client on this machine uses to reach the server."""
        if self.host in ("", "0.0.0.0", "::"):
            return "127.0.0.1"
        return self.host

    @property
    def server_url(self) -> str:
        host = "localhost" if self.public_host == "127.0.0.1" else self.public_host
        return f"http://{host}:{self.port}"

    @property
    def callback_path(self) -> str:
        return urlsplit(self.callback_url).path or "/"

    @property
    def party_b(self) -> str:
        if self.transaction_type == "CustomerBuyGoodsOnline":
            return self.till_number
        return self.shortcode


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number from {lo} to {hi} (got {raw!r})") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be a whole number from {lo} to {hi} (got {raw!r})")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds (got {raw!r})") from None
    if value < 0 or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a number of seconds (got {raw!r})")
    return value


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a number greater than 0 (got {raw!r})")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip() or default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)} (got {raw!r})")
    return raw


def _url(name: str, value: str, *, https_only: bool = False) -> str:
    parts = urlsplit(value)
    schemes = ("https",) if https_only else ("http", "https")
    if parts.scheme not in schemes or not parts.hostname:
        kind = "an https URL" if https_only else "an http(s) URL"
        raise ConfigError(f"{name} must be {kind} (got {value!r})")
    return value.rstrip("/") if name != "CALLBACK_URL" else value


def _networks(raw: str) -> tuple[str, ...]:
    networks = []
    for item in filter(None, (p.strip() for p in raw.split(","))):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"TRUSTED_PROXIES must be IP addresses or networks separated by commas (got {item!r})") \
                from None
    return tuple(networks)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build and check the settings; `env` defaults to `os.environ`."""
    env = os.environ if env is None else env
    get = lambda name: env.get(name, "").strip()  # noqa: E731

    mode = _choice(env, "MPESA_ENV", "simulator", MODES)
    app_env = _choice(env, "APP_ENV", "production" if mode == "production" else "development",
                      ("development", "production"))
    host = get("HOST") or "127.0.0.1"
    port = _int(env, "PORT", 3001, 1, 65535)
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    local_url = f"http://{local}:{port}"

    key, secret = get("MPESA_CONSUMER_KEY"), get("MPESA_CONSUMER_SECRET")
    shortcode, passkey = get("MPESA_BUSINESS_SHORTCODE"), get("MPESA_PASSKEY")
    callback_url = get("CALLBACK_URL")

    if mode == "simulator":
        if bool(key) != bool(secret):
            raise ConfigError("Set both MPESA_CONSUMER_KEY and MPESA_CONSUMER_SECRET, or neither (simulator mode)")
        key, secret = key or DEMO_CONSUMER_KEY, secret or DEMO_CONSUMER_SECRET
        base_url = f"{local_url}/daraja"
        callback_url = callback_url or f"{local_url}/mpesa/callback"
    else:
        if not key or not secret:
            raise ConfigError(f"MPESA_ENV={mode} needs MPESA_CONSUMER_KEY and MPESA_CONSUMER_SECRET "
                              "(from your app on developer.safaricom.co.ke)")
        base_url = SANDBOX_BASE_URL if mode == "sandbox" else PRODUCTION_BASE_URL
        if not callback_url:
            raise ConfigError(f"MPESA_ENV={mode} needs CALLBACK_URL, a public URL Daraja can POST to "
                              "(e.g. https://shop.example.com/mpesa/callback)")
    if mode == "production":
        if not shortcode or not passkey:
            raise ConfigError("MPESA_ENV=production needs MPESA_BUSINESS_SHORTCODE and MPESA_PASSKEY")
        _url("CALLBACK_URL", callback_url, https_only=True)
    else:
        _url("CALLBACK_URL", callback_url)
    if get("MPESA_BASE_URL"):
        # Production credentials never travel in plain HTTP.
        base_url = _url("MPESA_BASE_URL", get("MPESA_BASE_URL"), https_only=mode == "production")

    shortcode = shortcode or SANDBOX_SHORTCODE
    passkey = passkey or SANDBOX_PASSKEY
    if not shortcode.isdigit() or not 5 <= len(shortcode) <= 7:
        raise ConfigError("MPESA_BUSINESS_SHORTCODE must be 5 to 7 digits")
    transaction_type = _choice(env, "MPESA_TRANSACTION_TYPE", "CustomerPayBillOnline", TRANSACTION_TYPES)
    till = get("MPESA_TILL_NUMBER")
    if transaction_type == "CustomerBuyGoodsOnline" and not (till.isdigit() and 5 <= len(till) <= 7):
        raise ConfigError("MPESA_TRANSACTION_TYPE=CustomerBuyGoodsOnline needs MPESA_TILL_NUMBER (5 to 7 digits)")

    if urlsplit(callback_url).path.strip("/") == "":
        raise ConfigError("CALLBACK_URL needs a path of its own, not / (e.g. "
                          f"{callback_url.rstrip('/')}/mpesa/callback/<random>)")
    if mode == "production" and passkey == SANDBOX_PASSKEY:
        raise ConfigError("MPESA_PASSKEY is Safaricom's public sandbox passkey: production needs your own "
                          "(from the go-live e-mail)")
    reconcile_interval = _positive(env, "RECONCILE_INTERVAL_SECONDS", 10.0)
    reconcile_max_interval = _positive(env, "RECONCILE_MAX_INTERVAL_SECONDS", 60.0)
    if reconcile_max_interval < reconcile_interval:
        raise ConfigError("RECONCILE_MAX_INTERVAL_SECONDS must be at least RECONCILE_INTERVAL_SECONDS "
                          f"({reconcile_max_interval:g} < {reconcile_interval:g})")

    frontend_url = get("FRONTEND_URL") or f"http://localhost:{port}"
    _url("FRONTEND_URL", frontend_url)
    database_url = get("DATABASE_URL") or DEFAULT_DATABASE_URL
    if not database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(f"DATABASE_URL must start with sqlite:/// (got {database_url.split(':')[0]!r})")
    if database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("DATABASE_URL: PostgreSQL storage is not available in this version; use sqlite:///path")

    return Settings(
        host=host,
        port=port,
        app_env=app_env,
        frontend_url=frontend_url.rstrip("/"),
        mpesa_env=mode,
        base_url=base_url.rstrip("/"),
        consumer_key=key,
        consumer_secret=secret,
        shortcode=shortcode,
        passkey=passkey,
        transaction_type=transaction_type,
        till_number=till,
        callback_url=callback_url,
        database_url=database_url,
        business_name=get("BUSINESS_NAME") or "Demo Shop",
        max_amount=_int(env, "MPESA_MAX_AMOUNT", 150_000, 1, 1_000_000),
        daraja_timeout=_positive(env, "DARAJA_TIMEOUT_SECONDS", 15.0),
        reconcile_after=_seconds(env, "RECONCILE_AFTER_SECONDS", 20.0),
        reconcile_interval=reconcile_interval,
        reconcile_max_interval=reconcile_max_interval,
        payment_timeout=_positive(env, "PAYMENT_TIMEOUT_SECONDS", 300.0),
        push_limit_per_phone=_int(env, "PUSH_LIMIT_PER_PHONE", 5, 0, 1_000_000),
        push_limit_per_client=_int(env, "PUSH_LIMIT_PER_CLIENT", 30, 0, 1_000_000),
        push_limit_window=_positive(env, "PUSH_LIMIT_WINDOW_SECONDS", 300.0),
        lookup_limit_per_client=_int(env, "LOOKUP_LIMIT_PER_CLIENT", 20, 0, 1_000_000),
        lookup_limit_window=_positive(env, "LOOKUP_LIMIT_WINDOW_SECONDS", 60.0),
        trusted_proxies=_networks(env.get("TRUSTED_PROXIES", "")),
        stream_limit_per_client=_int(env, "STREAM_LIMIT_PER_CLIENT", 10, 1, 1_000_000),
        stream_limit_total=_int(env, "STREAM_LIMIT_TOTAL", 1000, 1, 1_000_000),
        poll_interval=_positive(env, "CHECKOUT_POLL_INTERVAL_SECONDS", 3.0),
        poll_timeout=_positive(env, "CHECKOUT_POLL_TIMEOUT_SECONDS", 120.0),
        usd_to_kes=_positive(env, "USD_TO_KES", 129.0),
    )


def sqlite_path(database_url: str) -> Path:
    """`sqlite:///data/x.db` → `data/x.db` (relative to the working directory);
    `sqlite:////abs/x.db` → `/abs/x.db`."""
    return Path(database_url.removeprefix("sqlite:///"))
