"""`python run.py doctor` as a subprocess: one line per check (settings, database, schema, writes,
Daraja OAuth, callback URL), exit 0 only when every one passes, and never a secret printed.
Sandbox mode is pointed (MPESA_BASE_URL) at a local aiohttp server that plays Daraja's OAuth."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from gateway.migrations import MIGRATIONS
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ["settings", "database", "schema", "writes", "durability", "Daraja OAuth", "callback URL"]
KEY, SECRET = "doctor-test-consumer-key", "right-secret-Zq8w1x"
CALLBACK_SECRET_PATH = "/mpesa/callback/k3y-0nly-d4raja-kn0ws"


def doctor(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """run.py doctor with exactly these settings (the test process's own M-Pesa variables, if any, dropped)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MPESA_", "CALLBACK_", "DATABASE_", "APP_"))}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "doctor"], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def lines(done: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """{check name: (mark, text)} from doctor's output, and its last line under ""."""
    out = done.stdout.splitlines()
    assert len(out) == len(CHECKS) + 1, done.stdout
    found = {}
    for line in out[:-1]:
        mark, rest = line.split(maxsplit=1)
        name, text = rest.split(": ", 1)
        found[name] = (mark, text)
    assert list(found) == CHECKS, done.stdout
    found[""] = ("", out[-1])
    return found


def migrated_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/shop.sqlite3"
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "migrate"], cwd=tmp_path,
                          env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return url


def test_simulator_mode_with_a_migrated_database_is_all_ok(tmp_path):
    done = doctor(tmp_path, DATABASE_URL=migrated_sqlite(tmp_path), ADMIN_TOKEN="admin-token-of-the-shop-42")
    assert done.returncode == 0, (done.stdout, done.stderr)
    found = lines(done)
    assert all(found[name][0] == "ok" for name in CHECKS), done.stdout
    assert "MPESA_ENV=simulator" in found["settings"][1]
    assert f"version {MIGRATIONS[-1].version}, the latest" in found["schema"][1] and "rolled back" in found["writes"][1]
    assert found["Daraja OAuth"][1].startswith("simulated")
    assert found[""][1] == "All checks passed."
    assert "admin-token-of-the-shop-42" not in done.stdout + done.stderr


def test_a_bad_database_url_fails_the_database_and_skips_what_needs_it(tmp_path):
    done = doctor(tmp_path, DATABASE_URL="mysql://db/shop")
    assert done.returncode == 1, done.stdout
    found = lines(done)
    assert found["database"] == ("FAIL", "DATABASE_URL must start with sqlite:/// or postgresql:// (got 'mysql')")
    assert found["schema"][0] == found["writes"][0] == "skip"
    assert found["settings"][0] == "FAIL"  # the server would refuse it too
    missing = doctor(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/none.sqlite3")
    assert lines(missing)["database"][0] == "FAIL" and "No database at" in missing.stdout
    assert not (tmp_path / "none.sqlite3").exists()  # not created by looking
    unreachable = doctor(tmp_path, DATABASE_URL=f"postgresql://shop:pg-pass-9911@127.0.0.1:{free_port()}/shop")
    mark, text = lines(unreachable)["database"]
    assert mark == "FAIL" and text.startswith("cannot connect to postgresql://shop:…@127.0.0.1:"), text
    assert "pg-pass-9911" not in unreachable.stdout + unreachable.stderr


async def test_an_unmigrated_postgresql_database_fails_the_schema_check(postgres_url, tmp_path):
    done = await asyncio.to_thread(doctor, tmp_path, DATABASE_URL=postgres_url)
    assert done.returncode == 1, done.stdout
    found = lines(done)
    assert found["database"][0] == "ok"
    assert found["schema"] == ("FAIL", "no schema yet (empty database): run `python run.py migrate` "
                                       "(or start the gateway once)")
    assert found["writes"][0] == "skip"
    migrate = await asyncio.to_thread(subprocess.run, [sys.executable, str(ROOT / "run.py"), "migrate"], cwd=tmp_path,
                                      env={**os.environ, "DATABASE_URL": postgres_url}, capture_output=True,
                                      text=True, timeout=60)
    assert migrate.returncode == 0, migrate.stderr
    again = await asyncio.to_thread(doctor, tmp_path, DATABASE_URL=postgres_url)
    found = lines(again)
    assert [found[n][0] for n in ("database", "schema", "writes")] == ["ok", "ok", "ok"]
    # The tests' own cluster runs without fsync (fast, and forgetful after a crash of its server).
    assert found["durability"] == ("FAIL", "fsync=off, synchronous_commit=off: a crash of the database server "
                                           "would forget payments it acknowledged; set both to on in postgresql.conf")
    assert again.returncode == 1, again.stdout


async def test_a_durable_postgresql_server_passes_every_database_check(tmp_path):
    from tests.pg_cluster import binaries, running_cluster

    if binaries() is None:
        pytest.skip("PostgreSQL binaries not found")
    with running_cluster(durable=True) as server:
        done = await asyncio.to_thread(doctor, tmp_path, DATABASE_URL=server.url)
        found = lines(done)
        assert found["schema"][0] == "FAIL"  # nothing migrated yet
        assert found["durability"] == ("ok", "fsync=on, synchronous_commit=on"), done.stdout


def test_an_sqlite_file_of_the_previous_schema_version_fails_the_schema_check(tmp_path):
    import sqlite3

    from gateway.migrations import MIGRATIONS

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0].sqlite)
        db.execute("PRAGMA user_version = 0")
    db.close()
    done = doctor(tmp_path, DATABASE_URL=f"sqlite:///{path}")
    mark, text = lines(done)["schema"]
    assert (done.returncode, mark) == (1, "FAIL") and "python run.py migrate" in text, done.stdout


async def fake_daraja(aiohttp_server) -> tuple[str, list[str]]:
    """Daraja's OAuth endpoint: a token for KEY:SECRET, an empty 400 for anything else (as Daraja does)."""
    seen: list[str] = []

    async def oauth(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.query.get("grant_type") != "client_credentials":
            return web.json_response({"errorCode": "400.008.02", "errorMessage": "Invalid grant type passed"},
                                     status=400)
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode():
            return web.Response(status=400)
        return web.json_response({"access_token": "tok-123", "expires_in": "3599"})

    app = web.Application()
    app.router.add_get("/oauth/v1/generate", oauth)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/"), seen


def sandbox(database_url: str, base_url: str, secret: str) -> dict[str, str]:
    return {"MPESA_ENV": "sandbox", "MPESA_BASE_URL": base_url, "MPESA_CONSUMER_KEY": KEY,
            "MPESA_CONSUMER_SECRET": secret, "CALLBACK_URL": f"https://shop.example.com{CALLBACK_SECRET_PATH}",
            "DATABASE_URL": database_url}


async def test_sandbox_oauth_with_the_right_and_a_wrong_secret(aiohttp_server, tmp_path):
    base_url, seen = await fake_daraja(aiohttp_server)
    url = migrated_sqlite(tmp_path)
    right = await asyncio.to_thread(doctor, tmp_path, **sandbox(url, base_url, SECRET))
    assert right.returncode == 0, right.stdout
    found = lines(right)
    assert found["Daraja OAuth"] == ("ok", f"a token from {base_url} with the configured key and secret")
    assert found["callback URL"] == ("ok", "https://shop.example.com/… (path hidden): https, a path of its own")
    assert len(seen) == 1  # one real token request

    wrong_secret = "wrong-secret-Pp4k7J"
    wrong = await asyncio.to_thread(doctor, tmp_path, **sandbox(url, base_url, wrong_secret))
    assert wrong.returncode == 1, wrong.stdout
    mark, text = lines(wrong)["Daraja OAuth"]
    assert mark == "FAIL" and "refused MPESA_CONSUMER_KEY and MPESA_CONSUMER_SECRET" in text, text
    assert "developer.safaricom.co.ke" in text
    assert [lines(wrong)[n][0] for n in CHECKS if n != "Daraja OAuth"] == ["ok"] * (len(CHECKS) - 1)
    for done in (right, wrong):
        printed = done.stdout + done.stderr
        assert SECRET not in printed and wrong_secret not in printed and CALLBACK_SECRET_PATH not in printed
        assert base64.b64encode(f"{KEY}:{wrong_secret}".encode()).decode() not in printed


async def test_sandbox_with_daraja_unreachable_says_so(tmp_path):
    done = await asyncio.to_thread(doctor, tmp_path, **sandbox(migrated_sqlite(tmp_path),
                                                                 f"http://127.0.0.1:{free_port()}", SECRET))
    mark, text = lines(done)["Daraja OAuth"]
    assert (done.returncode, mark) == (1, "FAIL") and "could not be reached" in text and "MPESA_BASE_URL" in text


def test_a_production_callback_on_http_fails_and_its_path_stays_hidden(tmp_path):
    secret_path = "/mpesa/callback/pr0d-s3cret-path"
    done = doctor(tmp_path, DATABASE_URL=migrated_sqlite(tmp_path), MPESA_ENV="production",
                  MPESA_CONSUMER_KEY=KEY, MPESA_CONSUMER_SECRET=SECRET, MPESA_BUSINESS_SHORTCODE="600123",
                  MPESA_PASSKEY="production-passkey-0123456789", CALLBACK_URL=f"http://shop.example.com{secret_path}")
    assert done.returncode == 1, done.stdout
    found = lines(done)
    assert found["settings"] == ("FAIL", "CALLBACK_URL must be an https URL (got 'http://shop.example.com/… "
                                         "(path hidden)')")
    assert found["callback URL"] == ("FAIL", "http://shop.example.com/… (path hidden): use https (Daraja posts "
                                             "callbacks to https URLs)")
    assert found["Daraja OAuth"][0] == "skip"  # needs the settings: no request made with them
    printed = done.stdout + done.stderr
    assert secret_path not in printed and "pr0d-s3cret" not in printed and SECRET not in printed
    assert "production-passkey" not in printed
    local = doctor(tmp_path, DATABASE_URL=migrated_sqlite(tmp_path), MPESA_ENV="production",
                   MPESA_CONSUMER_KEY=KEY, MPESA_CONSUMER_SECRET=SECRET, MPESA_BUSINESS_SHORTCODE="600123",
                   MPESA_PASSKEY="production-passkey-0123456789", MPESA_BASE_URL="https://127.0.0.1:9",
                   CALLBACK_URL=f"https://localhost{secret_path}")
    mark, text = lines(local)["callback URL"]
    assert mark == "FAIL" and "use a public host name, not localhost" in text and secret_path not in local.stdout
