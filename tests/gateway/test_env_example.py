"""The shipped .env.example must load as it is: a new user copies it and starts."""

import re
from pathlib import Path

from dotenv import dotenv_values

from gateway.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_loads_into_working_simulator_settings():
    values = {k: v or "" for k, v in dotenv_values(ROOT / ".env.example").items()}
    settings = load_settings(values)
    assert settings.mpesa_env == "simulator"
    assert settings.base_url == "http://127.0.0.1:3001/daraja"


def settings_the_code_reads() -> set[str]:
    code = (ROOT / "gateway" / "config.py").read_text()
    return set(re.findall(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|PORT|HOST)"', code))


def test_env_example_names_every_setting_the_code_reads():
    read = settings_the_code_reads()
    assert len(read) > 40
    assert read - set(dotenv_values(ROOT / ".env.example")) == set()


def test_readme_documents_every_setting_the_code_reads():
    readme = (ROOT / "README.md").read_text()
    assert {name for name in settings_the_code_reads() if f"`{name}`" not in readme} == set()
