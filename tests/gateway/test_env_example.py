"""The shipped .env.example must load as it is: a new user copies it and starts. It and the README
name every setting the gateway or the simulator reads, and its simulator values are the defaults."""

import re
from pathlib import Path

from dotenv import dotenv_values

from gateway.config import load_settings
from gateway.config import setting_names as gateway_setting_names
from simulator.settings import SimulatorSettings, load_simulator_settings, setting_names

ROOT = Path(__file__).resolve().parents[2]


def env_example() -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(ROOT / ".env.example").items()}


def test_env_example_loads_into_working_simulator_settings():
    settings = load_settings(env_example())
    assert settings.mpesa_env == "simulator"
    assert settings.base_url == "http://127.0.0.1:3001/daraja"


def test_env_example_gives_the_simulator_its_defaults():
    assert load_simulator_settings(env_example()) == SimulatorSettings()


def test_env_example_gives_the_gateway_its_defaults():
    assert load_settings(env_example()) == load_settings({})


def gateway_settings() -> set[str]:
    return set(gateway_setting_names())


def test_the_gateway_reads_no_setting_it_does_not_declare():
    code = (ROOT / "gateway" / "config.py").read_text()
    named = set(re.findall(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|PORT|HOST)"', code))
    assert named <= gateway_settings()


def settings_the_code_reads() -> set[str]:
    return gateway_settings() | set(setting_names())


def test_both_parts_settings_are_found():
    assert len(gateway_settings()) > 25
    assert {"SIMULATOR_PIN", "SIMULATOR_MERCHANTS", "MPESA_CONSUMER_KEY", "PORT"} <= set(setting_names())
    assert len(settings_the_code_reads()) > 50


def test_env_example_names_every_setting_the_code_reads():
    assert settings_the_code_reads() - set(dotenv_values(ROOT / ".env.example")) == set()


def test_readme_documents_every_setting_the_code_reads():
    readme = (ROOT / "README.md").read_text()
    assert {name for name in settings_the_code_reads() if f"`{name}`" not in readme} == set()
