"""Settings: read once from the environment (and `.env`), checked, then passed around.

`load_settings()` is the only place that reads `os.environ`. It refuses a configuration that
cannot work, with a `ConfigError` whose message is one line naming what to set.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
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


Parser = Callable[[str, str], Any]  # (setting name, raw value) -> value, or ConfigError


def _text(name: str, raw: str) -> str:
    return raw


def _whole(lo: int, hi: int) -> Parser:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = lo - 1
        if not lo <= value <= hi:
            raise ConfigError(f"{name} must be a whole number from {lo} to {hi} (got {raw!r})")
        return value
    return parse


def _seconds(name: str, raw: str) -> float:
    """Zero or more seconds."""
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):  # NaN fails both comparisons
        raise ConfigError(f"{name} must be a number of seconds (got {raw!r})")
    return value


def _positive(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a number greater than 0 (got {raw!r})")
    return value


def _one_of(*choices: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        if raw not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)} (got {raw!r})")
        return raw
    return parse


def _switch(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false (got {raw.lower()!r})")


def _secret(shortest: int) -> Parser:
    """A key, token or secret: long enough not to be guessed; never echoed in the message."""
    def parse(name: str, raw: str) -> str:
        if len(raw) < shortest:
            raise ConfigError(f"{name} must be at least {shortest} characters (e.g. python -c \"import secrets; "
                              "print(secrets.token_urlsafe(32))\")")
        return raw
    return parse


def _shortcode(name: str, raw: str) -> str:
    if not (raw.isascii() and raw.isdigit() and 5 <= len(raw) <= 7):
        raise ConfigError(f"{name} must be 5 to 7 digits")
    return raw


def _database_url(name: str, raw: str) -> str:
    if raw.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(raw)
        if not parts.hostname or not parts.path.strip("/"):
            raise ConfigError(f"{name} must name a host and a database: postgresql://user:password@host:port/database")
        try:
            parts.port  # noqa: B018 (a port that is not a number raises here)
        except ValueError:
            raise ConfigError(f"{name} has a port that is not a number") from None
        return raw
    if not raw.startswith("sqlite:///"):
        raise ConfigError(f"{name} must start with sqlite:/// or postgresql:// (got {raw.split(':')[0]!r})")
    return raw


def _networks(name: str, raw: str) -> tuple[str, ...]:
    networks = []
    for item in filter(None, (p.strip() for p in raw.split(","))):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{name} must be IP addresses or networks separated by commas (got {item!r})") \
                from None
    return tuple(networks)


def _url(name: str, value: str, *, https_only: bool = False) -> str:
    parts = urlsplit(value)
    schemes = ("https",) if https_only else ("http", "https")
    if parts.scheme not in schemes or not parts.hostname:
        kind = "an https URL" if https_only else "an http(s) URL"
        raise ConfigError(f"{name} must be {kind} (got {value!r})")
    return value


def _setting(default: Any, name: str, parse: Parser, *, secret: bool = False) -> Any:
    """A field read from the environment variable `name` (secrets stay out of repr)."""
    return field(default=default, repr=not secret, metadata={"env": name, "parse": parse})


@dataclass(frozen=True)
class Settings:
    """The gateway's settings. Each default is written here once; a few depend on the mode or on
    another setting and are filled in by `load_settings` (noted beside them)."""

    mpesa_env: str = _setting("simulator", "MPESA_ENV", _one_of(*MODES))
    # In production mode, production unless set.
    app_env: str = _setting("development", "APP_ENV", _one_of("development", "production"))
    host: str = _setting("127.0.0.1", "HOST", _text)
    port: int = _setting(3001, "PORT", _whole(1, 65535))
    frontend_url: str = _setting("", "FRONTEND_URL", _text)  # "": http://localhost:PORT
    business_name: str = _setting("Demo Shop", "BUSINESS_NAME", _text)

    # Daraja: the credentials default to the simulator's demo pair and Safaricom's sandbox paybill,
    # which only simulator mode (credentials) and simulator or sandbox mode (paybill) accept.
    base_url: str = _setting("", "MPESA_BASE_URL", _text)  # "": the mode's (the simulator's mount in simulator mode)
    consumer_key: str = _setting(DEMO_CONSUMER_KEY, "MPESA_CONSUMER_KEY", _text)
    consumer_secret: str = _setting(DEMO_CONSUMER_SECRET, "MPESA_CONSUMER_SECRET", _text, secret=True)
    shortcode: str = _setting(SANDBOX_SHORTCODE, "MPESA_BUSINESS_SHORTCODE", _shortcode)
    passkey: str = _setting(SANDBOX_PASSKEY, "MPESA_PASSKEY", _text, secret=True)
    transaction_type: str = _setting("CustomerPayBillOnline", "MPESA_TRANSACTION_TYPE", _one_of(*TRANSACTION_TYPES))
    till_number: str = _setting("", "MPESA_TILL_NUMBER", _text)
    # Its path may be the callback's only secret. "": this server's /mpesa/callback in simulator mode.
    callback_url: str = _setting("", "CALLBACK_URL", _text, secret=True)
    daraja_timeout: float = _setting(15.0, "DARAJA_TIMEOUT_SECONDS", _positive)

    database_url: str = _setting(DEFAULT_DATABASE_URL, "DATABASE_URL", _database_url)
    max_amount: int = _setting(150_000, "MPESA_MAX_AMOUNT", _whole(1, 1_000_000))
    max_body_bytes: int = 64 * 1024

    # A payment without a callback: queried after this, then with back-off; given up locally after the time-out.
    reconcile_after: float = _setting(20.0, "RECONCILE_AFTER_SECONDS", _seconds)
    reconcile_interval: float = _setting(10.0, "RECONCILE_INTERVAL_SECONDS", _positive)
    reconcile_max_interval: float = _setting(60.0, "RECONCILE_MAX_INTERVAL_SECONDS", _positive)
    # However many are due, the reconciler sends Daraja at most this many STK queries a second (in all: the
    # processes sharing a PostgreSQL database each take an equal share).
    reconcile_queries_per_second: int = _setting(50, "RECONCILE_QUERIES_PER_SECOND", _whole(1, 10_000))
    payment_timeout: float = _setting(300.0, "PAYMENT_TIMEOUT_SECONDS", _positive)

    # Abuse limits (0: no limit).
    push_limit_per_phone: int = _setting(5, "PUSH_LIMIT_PER_PHONE", _whole(0, 1_000_000))
    push_limit_per_client: int = _setting(30, "PUSH_LIMIT_PER_CLIENT", _whole(0, 1_000_000))
    push_limit_window: float = _setting(300.0, "PUSH_LIMIT_WINDOW_SECONDS", _positive)
    lookup_limit_per_client: int = _setting(20, "LOOKUP_LIMIT_PER_CLIENT", _whole(0, 1_000_000))  # unknown ids
    lookup_limit_window: float = _setting(60.0, "LOOKUP_LIMIT_WINDOW_SECONDS", _positive)
    trusted_proxies: tuple[str, ...] = _setting((), "TRUSTED_PROXIES", _networks)  # whose X-Forwarded-For counts
    stream_limit_per_client: int = _setting(10, "STREAM_LIMIT_PER_CLIENT", _whole(1, 1_000_000))
    stream_limit_total: int = _setting(1000, "STREAM_LIMIT_TOTAL", _whole(1, 1_000_000))

    # The shop behind the gateway: its backend's API key (orders), free-amount pushes (the original
    # guide's contract; None: on in simulator and sandbox mode, off in production), the demo
    # catalogue of simulator mode (None: on in simulator mode only), its webhooks, the operator's view.
    shop_api_key: str = _setting("", "SHOP_API_KEY", _secret(24), secret=True)
    free_amount_pushes: bool | None = _setting(None, "FREE_AMOUNT_PUSHES", _switch)
    demo_catalogue: bool | None = _setting(None, "DEMO_CATALOGUE", _switch)
    webhook_url: str = _setting("", "MERCHANT_WEBHOOK_URL", _text)
    webhook_secret: str = _setting("", "MERCHANT_WEBHOOK_SECRET", _secret(24), secret=True)
    webhook_retry_for: float = _setting(3 * 86_400.0, "WEBHOOK_RETRY_SECONDS", _positive)  # then "failed"
    webhook_timeout: float = _setting(10.0, "WEBHOOK_TIMEOUT_SECONDS", _positive)
    admin_token: str = _setting("", "ADMIN_TOKEN", _secret(16), secret=True)  # "": no /admin
    # What the operator sees of the running gateway (gateway/observability.py).
    log_format: str = _setting("text", "LOG_FORMAT", _one_of("text", "json"))
    metrics_enabled: bool = _setting(False, "METRICS_ENABLED", _switch)  # GET /metrics
    metrics_token: str = _setting("", "METRICS_TOKEN", _secret(16), secret=True)  # "": /metrics needs no token

    # The pay page.
    poll_interval: float = _setting(3.0, "CHECKOUT_POLL_INTERVAL_SECONDS", _positive)
    poll_timeout: float = _setting(120.0, "CHECKOUT_POLL_TIMEOUT_SECONDS", _positive)

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


def _environment_fields() -> list[Field[Any]]:
    return [f for f in fields(Settings) if "env" in f.metadata]


def setting_names() -> list[str]:
    """Every environment variable the gateway reads."""
    return [f.metadata["env"] for f in _environment_fields()]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build and check the settings; `env` defaults to `os.environ` (blank values take the default)."""
    env = os.environ if env is None else env
    given: dict[str, Any] = {}
    for f in _environment_fields():
        name = f.metadata["env"]
        raw = env.get(name, "").strip()
        if raw:
            given[f.name] = f.metadata["parse"](name, raw)
    settings = Settings(**given)
    return replace(settings, **_by_mode(settings, given))


def _by_mode(s: Settings, given: dict[str, Any]) -> dict[str, Any]:
    """What the mode requires or fills in, and the rules that tie settings together."""
    derived = _daraja_by_mode(s, given)
    if s.mpesa_env == "production" and "app_env" not in given:
        derived["app_env"] = "production"
    callback_url = derived.get("callback_url", s.callback_url)
    _url("CALLBACK_URL", callback_url, https_only=s.mpesa_env == "production")
    if urlsplit(callback_url).path.strip("/") == "":
        raise ConfigError("CALLBACK_URL needs a path of its own, not / (e.g. "
                          f"{callback_url.rstrip('/')}/mpesa/callback/<random>)")
    if s.transaction_type == "CustomerBuyGoodsOnline" and not (
            s.till_number.isdigit() and 5 <= len(s.till_number) <= 7):
        raise ConfigError("MPESA_TRANSACTION_TYPE=CustomerBuyGoodsOnline needs MPESA_TILL_NUMBER (5 to 7 digits)")
    if s.reconcile_max_interval < s.reconcile_interval:
        raise ConfigError("RECONCILE_MAX_INTERVAL_SECONDS must be at least RECONCILE_INTERVAL_SECONDS "
                          f"({s.reconcile_max_interval:g} < {s.reconcile_interval:g})")
    derived["frontend_url"] = _url("FRONTEND_URL", s.frontend_url or f"http://localhost:{s.port}").rstrip("/")
    derived.update(_shop_by_mode(s))
    return derived


def _shop_by_mode(s: Settings) -> dict[str, Any]:
    """The shop's switches that default by mode, and the webhook settings that go together."""
    derived: dict[str, Any] = {}
    if s.free_amount_pushes is None:
        derived["free_amount_pushes"] = s.mpesa_env != "production"
    if s.demo_catalogue is None:
        derived["demo_catalogue"] = s.mpesa_env == "simulator"
    if bool(s.webhook_url) != bool(s.webhook_secret):
        raise ConfigError("Set both MERCHANT_WEBHOOK_URL and MERCHANT_WEBHOOK_SECRET, or neither")
    if s.webhook_url:
        derived["webhook_url"] = _url("MERCHANT_WEBHOOK_URL", s.webhook_url,
                                      https_only=s.mpesa_env == "production")
    return derived


def _daraja_by_mode(s: Settings, given: dict[str, Any]) -> dict[str, Any]:
    """The Daraja base URL, credentials and callback URL each mode requires or fills in."""
    mode, local_url = s.mpesa_env, f"http://{s.public_host}:{s.port}"
    derived: dict[str, Any] = {}
    if mode == "simulator":
        if ("consumer_key" in given) != ("consumer_secret" in given):
            raise ConfigError("Set both MPESA_CONSUMER_KEY and MPESA_CONSUMER_SECRET, or neither (simulator mode)")
        derived["base_url"] = f"{local_url}/daraja"
        derived["callback_url"] = s.callback_url or f"{local_url}/mpesa/callback"
    else:
        if "consumer_key" not in given or "consumer_secret" not in given:
            raise ConfigError(f"MPESA_ENV={mode} needs MPESA_CONSUMER_KEY and MPESA_CONSUMER_SECRET "
                              "(from your app on developer.safaricom.co.ke)")
        derived["base_url"] = SANDBOX_BASE_URL if mode == "sandbox" else PRODUCTION_BASE_URL
        if not s.callback_url:
            raise ConfigError(f"MPESA_ENV={mode} needs CALLBACK_URL, a public URL Daraja can POST to "
                              "(e.g. https://shop.example.com/mpesa/callback)")
    if mode == "production":
        if "shortcode" not in given or "passkey" not in given:
            raise ConfigError("MPESA_ENV=production needs MPESA_BUSINESS_SHORTCODE and MPESA_PASSKEY")
        if s.passkey == SANDBOX_PASSKEY:
            raise ConfigError("MPESA_PASSKEY is Safaricom's public sandbox passkey: production needs your own "
                              "(from the go-live e-mail)")
        if s.metrics_enabled and not s.metrics_token:
            raise ConfigError("METRICS_ENABLED in production needs METRICS_TOKEN (16+ characters): the metrics "
                              "tell anyone who asks how many payments the shop takes")
    if s.base_url:  # MPESA_BASE_URL: production credentials never travel in plain HTTP
        derived["base_url"] = _url("MPESA_BASE_URL", s.base_url, https_only=mode == "production")
    derived["base_url"] = derived["base_url"].rstrip("/")
    return derived


def sqlite_path(database_url: str) -> Path:
    """`sqlite:///data/x.db` → `data/x.db` (relative to the working directory);
    `sqlite:////abs/x.db` → `/abs/x.db`."""
    return Path(database_url.removeprefix("sqlite:///"))


def is_postgresql(database_url: str) -> bool:
    return database_url.startswith(("postgresql://", "postgres://"))
