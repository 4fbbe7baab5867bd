"""The simulator's own settings: what it reads from the environment, each default written once.

Every field of `SimulatorSettings` that comes from the environment names its setting and the
parser that checks it; `load_simulator_settings` reads exactly those and nothing else, so a
setting of the shop (its database, its currency rate, its mode) can never stop the simulator.
A bad value raises `SimulatorConfigError` with one line naming the setting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any

from .profiles import PROFILES, Profile

# Safaricom's sandbox paybill and its published passkey: public, still kept out of logs and reprs.
SANDBOX_SHORTCODE = "174379"
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
# The app credentials accepted when none are configured.
DEMO_CONSUMER_KEY = "simulator-demo-consumer-key"
DEMO_CONSUMER_SECRET = "simulator-demo-consumer-secret"


class SimulatorConfigError(ValueError):
    """A simulator setting is unusable; the message is one line that names it."""


Parser = Callable[[str, str], Any]  # (setting name, raw value) -> value, or SimulatorConfigError


def _text(name: str, raw: str) -> str:
    return raw


def _whole(lo: int, hi: int) -> Parser:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = lo - 1
        if not lo <= value <= hi:
            raise SimulatorConfigError(f"{name} must be a whole number from {lo} to {hi} (got {raw!r})")
        return value
    return parse


def _seconds(name: str, raw: str) -> float:
    """Zero or more seconds."""
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):  # NaN fails both comparisons
        raise SimulatorConfigError(f"{name} must be a number of seconds (got {raw!r})")
    return value


def _positive(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise SimulatorConfigError(f"{name} must be a number greater than 0 (got {raw!r})")
    return value


def _switch(name: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SimulatorConfigError(f"{name} must be true or false (got {raw.lower()!r})")


def _one_of(*choices: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        if raw not in choices:
            raise SimulatorConfigError(f"{name} must be one of {', '.join(choices)} (got {raw!r})")
        return raw
    return parse


def _pin(name: str, raw: str) -> str:
    if not (raw.isascii() and raw.isdigit() and 4 <= len(raw) <= 6):
        raise SimulatorConfigError(f"{name} must be 4 to 6 digits")
    return raw


def _shortcode(name: str, raw: str) -> str:
    if not (raw.isdigit() and 5 <= len(raw) <= 7):
        raise SimulatorConfigError(f"{name} must be 5 to 7 digits")
    return raw


def _pairs(what: str, check: Callable[[str, str], bool]) -> Parser:
    """Comma-separated `a:b` pairs, e.g. SIMULATOR_MERCHANTS=600111:passkey,600222:passkey."""
    def parse(name: str, raw: str) -> tuple[tuple[str, str], ...]:
        pairs = []
        for item in filter(None, (part.strip() for part in raw.split(","))):
            left, _, right = item.partition(":")
            if not check(left, right):
                raise SimulatorConfigError(f"{name} must be {what} pairs separated by commas")
            pairs.append((left, right))
        return tuple(pairs)
    return parse


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _setting(default: Any, name: str, parse: Parser, *, secret: bool = False) -> Any:
    """A field read from the environment variable `name` (secrets stay out of repr)."""
    return field(default=default, repr=not secret, metadata={"env": name, "parse": parse})


@dataclass(frozen=True)
class SimulatorSettings:
    """The simulator's credentials, merchants, timings and behaviour (times in seconds)."""

    # The Daraja app and merchants it accepts: the sandbox paybill always, and the configured one.
    consumer_key: str = _setting(DEMO_CONSUMER_KEY, "MPESA_CONSUMER_KEY", _text)
    consumer_secret: str = _setting(DEMO_CONSUMER_SECRET, "MPESA_CONSUMER_SECRET", _text, secret=True)
    shortcode: str = _setting(SANDBOX_SHORTCODE, "MPESA_BUSINESS_SHORTCODE", _shortcode)
    passkey: str = _setting(SANDBOX_PASSKEY, "MPESA_PASSKEY", _text, secret=True)
    till_number: str = _setting("", "MPESA_TILL_NUMBER", _text)  # a Buy Goods till of that shortcode
    extra_merchants: tuple[tuple[str, str], ...] = _setting(
        (), "SIMULATOR_MERCHANTS", _pairs("shortcode:passkey", lambda code, key: code.isdigit() and bool(key)),
        secret=True)
    tills: tuple[tuple[str, str], ...] = _setting(  # (till, store shortcode) pairs for Buy Goods
        (), "SIMULATOR_TILLS", _pairs("till:store_shortcode", lambda till, store: _digits(till) and _digits(store)))
    business_name: str = _setting("Demo Shop", "BUSINESS_NAME", _text)  # on the prompt and the SMS

    # Where it listens when it stands alone (`python run.py simulator`).
    host: str = _setting("127.0.0.1", "HOST", _text)
    port: int = _setting(3001, "PORT", _whole(1, 65535))
    max_body_bytes: int = 64 * 1024  # larger request bodies get Daraja's "Invalid Request Payload"

    # The handset and the timings of a prompt's life.
    pin: str = _setting("12345", "SIMULATOR_PIN", _pin)
    auto_answer_delay: float = _setting(3.0, "SIMULATOR_AUTO_ANSWER_SECONDS", _seconds)
    prompt_lifetime: float = _setting(60.0, "SIMULATOR_PROMPT_LIFETIME_SECONDS", _positive)
    callback_delay: float = _setting(0.5, "SIMULATOR_CALLBACK_DELAY_SECONDS", _seconds)
    late_callback_delay: float = _setting(20.0, "SIMULATOR_LATE_CALLBACK_SECONDS", _seconds)
    callback_timeout: float = _setting(10.0, "SIMULATOR_CALLBACK_TIMEOUT_SECONDS", _positive)
    token_lifetime: int = _setting(3599, "SIMULATOR_TOKEN_LIFETIME_SECONDS", _whole(1, 86_400))
    # Which Daraja it speaks: today's ("current") or the one before late 2025 ("legacy"); see profiles.py.
    profile: str = _setting("current", "SIMULATOR_PROFILE", _one_of(*PROFILES))
    # How an open prompt answers the STK query: "4999" (the 2025+ form) or "500" (being processed);
    # "" follows the profile.
    query_pending_style: str = _setting("", "SIMULATOR_QUERY_PENDING_STYLE", _one_of("500", "4999"))
    lock_subscriber: bool = _setting(True, "SIMULATOR_LOCK_SUBSCRIBER", _switch)
    # Daraja's docs say 12, but it accepts more (15 in 2026, 14 in 2018): 0 refuses none.
    account_reference_max: int = _setting(0, "SIMULATOR_ACCOUNT_REFERENCE_MAX", _whole(0, 100))
    scenarios_file: str | None = _setting(None, "SIMULATOR_SCENARIOS_FILE", _text)

    # Fidelity switches and faults.
    single_token: bool = _setting(False, "SIMULATOR_SINGLE_TOKEN", _switch)  # a new token revokes the others
    callback_retries: int = _setting(0, "SIMULATOR_CALLBACK_RETRIES", _whole(0, 10))  # Daraja: one attempt
    callback_retry_delay: float = _setting(1.0, "SIMULATOR_CALLBACK_RETRY_DELAY_SECONDS", _seconds)  # doubles
    slow_seconds: float = _setting(5.0, "SIMULATOR_SLOW_SECONDS", _seconds)  # a "slow" push or query waits
    timeout_seconds: float = _setting(60.0, "SIMULATOR_TIMEOUT_SECONDS", _seconds)  # a "timeout" one hangs
    spike_arrest_per_second: int = _setting(0, "SIMULATOR_SPIKE_ARREST_PER_SECOND", _whole(0, 1_000_000))
    quota: int = _setting(0, "SIMULATOR_QUOTA", _whole(0, 1_000_000_000))  # requests until reset; 0: none

    @property
    def daraja(self) -> Profile:
        """The Daraja this simulator speaks (SIMULATOR_PROFILE)."""
        return PROFILES[self.profile]

    @property
    def pending_style(self) -> str:
        """The STK query's answer while a prompt is open: SIMULATOR_QUERY_PENDING_STYLE, else the profile's."""
        return self.query_pending_style or self.daraja.query_pending_style

    @property
    def merchants(self) -> dict[str, str]:
        """shortcode -> passkey: the sandbox paybill first, then the configured one, then any extras."""
        return {SANDBOX_SHORTCODE: SANDBOX_PASSKEY, self.shortcode: self.passkey, **dict(self.extra_merchants)}

    @property
    def all_tills(self) -> dict[str, str]:
        """till -> store shortcode, including MPESA_TILL_NUMBER, which belongs to MPESA_BUSINESS_SHORTCODE."""
        tills = dict(self.tills)
        if self.till_number:
            tills[self.till_number] = self.shortcode
        return tills


def _environment_fields() -> list[Field[Any]]:
    return [f for f in fields(SimulatorSettings) if "env" in f.metadata]


def setting_names() -> list[str]:
    """Every environment variable the simulator reads."""
    return [f.metadata["env"] for f in _environment_fields()]


def load_simulator_settings(env: Mapping[str, str]) -> SimulatorSettings:
    """The simulator's settings from `env` (blank values take the default)."""
    values: dict[str, Any] = {}
    for f in _environment_fields():
        name = f.metadata["env"]
        raw = env.get(name, "").strip()
        if raw:
            values[f.name] = f.metadata["parse"](name, raw)
    if ("consumer_key" in values) != ("consumer_secret" in values):
        raise SimulatorConfigError("Set both MPESA_CONSUMER_KEY and MPESA_CONSUMER_SECRET, or neither")
    return SimulatorSettings(**values)
