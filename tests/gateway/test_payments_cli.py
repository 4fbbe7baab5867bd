"""`python run.py payments …` run as a subprocess on a database the real app wrote (payments through
the simulator's test numbers, orders through the shop's API, webhooks to a real receiver), with the
app still running, and with the server process stopped."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from gateway.reports import today
from tests.conftest import Running
from tests.daraja_http import eventually
from tests.gateway.test_admin import (
    GIVES_UP,
    LOST,
    TIMES_OUT,
    admin_app,
    failed_event,
    late_and_double,
    paid_cancelled_and_ordered,
    receiver,  # noqa: F401 - the fixture
    trouble,
)
from tests.gateway.test_restart_durability import gateway_env, start_server, stop_server, wait_status

ROOT = Path(__file__).resolve().parents[2]


def payments_cli(database_url: str | None, *args: str | bytes, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url is not None:
        base["DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "run.py", "payments", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


async def cli(running: Running, *args: str, code: int = 0) -> str:
    """The command against the running app's database (the app keeps running meanwhile)."""
    done = await asyncio.to_thread(payments_cli, running.settings.database_url, *args)
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done.stdout


async def cli_json(running: Running, *args: str) -> Any:
    return json.loads(await cli(running, *args, "--json"))


async def test_list_searches_filters_and_totals_per_day(start_app):
    running = await admin_app(start_app)
    made = await paid_cancelled_and_ordered(running)
    out = await cli(running, "list")
    assert all(made[k] in out for k in ("paid", "cancelled", "ordered")) and "1-3 of 3 payments" in out
    assert made["receipt"] in out and "INV-1042" in out and "KES 3,000" in out

    async def ids(*args: str) -> set[str]:
        body = await cli_json(running, "list", *args)
        return {p["checkout_request_id"] for p in body["payments"]}

    assert await ids("-q", "0700000000") == {made["paid"], made["ordered"]}
    assert await ids("-q", "+254 700 000 002") == {made["cancelled"]}
    assert await ids("-q", made["receipt"]) == {made["paid"]}
    assert await ids("-q", "INV-1042") == {made["ordered"]}
    assert await ids("-q", made["order"]["orderId"]) == {made["ordered"]}
    assert await ids("--status", "failed") == {made["cancelled"]}
    day = today().isoformat()
    assert await ids("--from", day, "--to", day) == {made["paid"], made["cancelled"], made["ordered"]}
    assert await ids("--to", "2000-01-01") == set()
    for literal in ("%", "_", "SHOP_7", "' OR '1'='1"):  # wildcards and quotes are text to look for
        assert await ids("-q", literal) == set(), literal
    assert await ids("-q", "HOP-7") == {made["paid"]}
    body = await cli_json(running, "list", "--limit", "2")
    assert (body["total"], len(body["payments"])) == (3, 2)
    stored = await running.payments.get(made["cancelled"])
    [row] = (await cli_json(running, "list", "--status", "failed"))["payments"]
    assert (row["amount"], row["phone"], row["result_code"], row["message"]) == (
        stored.amount, stored.phone, "1032", "User cancelled transaction")

    out = await cli(running, "totals")
    assert out.splitlines()[2].split() == [day, "3", "2", "KES", "3,100", "1", "0"]
    [total] = await cli_json(running, "totals", "--status", "completed")
    assert total == {"day": day, "payments": 2, "completed": 2, "paid_amount": 3100, "failed": 0, "pending": 0}

    out = await cli(running, "orders")
    assert made["order"]["orderId"] in out and "INV-1042" in out and "paid" in out
    [order] = (await cli_json(running, "orders", "-q", made["receipt"].lower()))["orders"] or [None]
    assert order is None  # that receipt paid the free push, not the order
    [order] = (await cli_json(running, "orders", "-q", made["order_receipt"]))["orders"]
    assert (order["order_id"], order["status"], order["completed"]) == (made["order"]["orderId"], "paid", 1)


async def test_show_a_payment_or_an_order_by_any_of_its_ids(start_app):
    running = await admin_app(start_app)
    made = await paid_cancelled_and_ordered(running)
    for ident in (made["paid"], made["receipt"], made["receipt"].lower()):
        out = await cli(running, "show", ident)
        assert made["paid"] in out and made["receipt"] in out and "applied" in out  # with its callback
    body = await cli_json(running, "show", made["cancelled"])
    assert (body["payment"]["status"], body["payment"]["result_code"]) == ("failed", "1032")
    assert [c["outcome"] for c in body["callbacks"]] == ["verified"]  # a failure is confirmed by a query first
    out = await cli(running, "show", made["order"]["orderId"])
    assert "INV-1042" in out and made["ordered"] in out and "KES 3,000" in out
    assert "No payment, order or webhook event" in await cli(running, "show", "ws_CO_nothing", code=1)
    assert "No order" in await cli(running, "show", "ord_nothing", code=1)


async def test_unmatched_callbacks_lost_answers_late_successes_and_double_payments(start_app):
    running = await admin_app(start_app, DARAJA_TIMEOUT_SECONDS=TIMES_OUT, **GIVES_UP)
    assert "No callbacks" in await cli(running, "unmatched")
    for command, says in (("lost", "No pushes"), ("late", "No late"), ("doubles", "No order")):
        assert says in await cli(running, command)
    seen = await trouble(running)
    made = await late_and_double(running)

    out = await cli(running, "unmatched")
    assert seen["forged_for"] in out and "unverified" in out and "Amount 1 is not the KES 100 asked" in out
    assert seen["stray"] in out and "unknown" in out and "PAID" in out
    [unknown] = await cli_json(running, "unmatched", "--outcome", "unknown")
    assert (unknown["checkout_request_id"], unknown["amount"], unknown["money_taken"]) == (seen["stray"], "77",
                                                                                        True)
    [lost] = await cli_json(running, "lost")
    assert (lost["phone"], lost["amount"], lost["account_reference"], lost["state"]) == (LOST, 30, "LOST-1",
                                                                                      "unknown")
    assert LOST in await cli(running, "lost")
    late = await cli_json(running, "late")
    assert [p["checkout_request_id"] for p in late] == [made["first"]] and late[0]["late"] is True
    [double] = await cli_json(running, "doubles")
    assert double["order"]["reference"] == "INV-2001" and double["order"]["double_paid"] is True
    assert {p["checkout_request_id"] for p in double["payments"]} == {made["first"], made["second"]}
    out = await cli(running, "doubles")
    assert "INV-2001" in out and "paid 2 times" in out


async def test_webhooks_are_listed_and_resend_queues_one_for_the_running_gateway(start_app, receiver):  # noqa: F811
    running, event_id = await failed_event(start_app, receiver)
    out = await cli(running, "webhooks", "--state", "failed")
    assert event_id in out and "HTTP 503: receiver says no" in out and "payment.completed" in out
    assert "No webhook events" in await cli(running, "webhooks", "--state", "delivered")
    out = await cli(running, "show", event_id)
    assert event_id in out and "failed" in out and '"type": "payment.completed"' in out
    tried = len(receiver.deliveries)

    receiver.default = 200
    out = await cli(running, "resend", event_id)
    assert f"Queued {event_id} again" in out
    await receiver.wait_for("payment.completed", tried + 1)
    assert receiver.deliveries[-1].headers["Mpesa-Event-Id"] == event_id

    async def delivered() -> bool:
        body = await cli_json(running, "webhooks", "--state", "delivered")
        return [e["event_id"] for e in body["events"]] == [event_id]

    await eventually(delivered, 5, "delivered after the resend")
    body = await cli_json(running, "show", event_id)
    assert body["event"]["attempts"] == tried + 1 and body["event"]["tries"][-1]["status"] == 200
    assert "No webhook event" in await cli(running, "resend", "evt_nothing", code=1)


async def test_export_writes_the_filtered_payments_as_csv(start_app, tmp_path):
    running = await admin_app(start_app)
    made = await paid_cancelled_and_ordered(running)
    rows = list(csv.DictReader(io.StringIO(await cli(running, "export"))))
    assert [r["checkout_request_id"] for r in rows] == [made["ordered"], made["cancelled"], made["paid"]]
    for row in rows:
        stored = await running.payments.get(row["checkout_request_id"])
        assert (row["status"], int(row["amount"]), row["phone"], row["receipt"] or None) == (
            stored.status, stored.amount, stored.phone, stored.receipt)
    target = tmp_path / "paid.csv"
    out = await cli(running, "export", "--status", "completed", "-o", str(target))
    assert out == f"Wrote 2 payments to {target}\n"
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert {r["checkout_request_id"] for r in rows} == {made["paid"], made["ordered"]}
    assert {r["order_reference"] for r in rows} == {"", "INV-1042"}


def test_it_reads_the_database_with_the_server_stopped(tmp_path):
    env = {**gateway_env(tmp_path), "RECONCILE_AFTER_SECONDS": "30"}  # the callback, with its receipt, settles
    base = f"http://127.0.0.1:{env['PORT']}"
    proc = start_server(env)
    try:
        paid = requests.post(f"{base}/stkpush", json={"phone": "0700000000", "amount": 100}, timeout=10).json()
        cancelled = requests.post(f"{base}/stkpush", json={"phone": "0700000002", "amount": 40}, timeout=10).json()
        receipt = wait_status(base, paid["checkoutRequestId"], "completed")["transaction_id"]
        assert wait_status(base, cancelled["checkoutRequestId"], "failed")["status"] == "failed"
    finally:
        stop_server(proc)
    assert proc.returncode is not None  # no server any more: the command reads the file itself
    done = payments_cli(env["DATABASE_URL"], "list")
    assert done.returncode == 0, done.stderr
    assert paid["checkoutRequestId"] in done.stdout and receipt in done.stdout
    assert cancelled["checkoutRequestId"] in done.stdout
    done = payments_cli(env["DATABASE_URL"], "export", "--status", "failed")
    assert [r["checkout_request_id"] for r in csv.DictReader(io.StringIO(done.stdout))] == [
        cancelled["checkoutRequestId"]]


def test_bad_arguments_and_a_missing_database_are_refused_clearly(tmp_path):
    missing = f"sqlite:///{tmp_path}/none.sqlite3"
    done = payments_cli(missing, "list")
    assert done.returncode == 2
    assert done.stderr.strip() == (f"run.py payments: No database at {tmp_path}/none.sqlite3 (DATABASE_URL): set "
                                   "DATABASE_URL to the gateway's, or start it once")
    assert not (tmp_path / "none.sqlite3").exists()  # not created by looking
    done = payments_cli("postgresql://db/shop", "list")  # a server that cannot be reached: one line
    assert done.returncode == 2 and "cannot connect to postgresql://db/shop" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    # A database the gateway wrote, and arguments it cannot use.
    database = tmp_path / "db.sqlite3"
    created = subprocess.run([sys.executable, "-c", "import asyncio, sys; from gateway.storage import "
                              "SqliteTransactionStore as S; s = S(sys.argv[1]); asyncio.run(s.open()); "
                              "asyncio.run(s.close())", str(database)], cwd=ROOT, capture_output=True, timeout=30)
    assert created.returncode == 0, created.stderr
    url = f"sqlite:///{database}"
    for args, says in ((("list", "--from", "2026-02-30"), "not a day of the calendar"),
                       (("list", "--status", "paid"), "status must be one of pending, completed, failed"),
                       (("orders", "--status", "completed"), "status must be one of open, paid"),
                       (("list", "--from", "2026-02-02", "--to", "2026-02-01"), "from must not be after to")):
        done = payments_cli(url, *args)
        assert (done.returncode, says in done.stderr) == (2, True), (args, done.stderr)
    done = payments_cli(url, "list", "--limit", "0")
    assert done.returncode == 2 and "a whole number from 1 to 1000" in done.stderr
    done = payments_cli(url, "list", "--database", missing)  # --database wins over DATABASE_URL
    assert done.returncode == 2 and "No database" in done.stderr
    done = payments_cli(url, "list")
    assert (done.returncode, done.stdout) == (0, "No payments.\n")


def test_absurd_arguments_are_refused_or_answered_never_a_traceback(tmp_path):
    database = tmp_path / "db.sqlite3"
    created = subprocess.run([sys.executable, "-c", "import asyncio, sys; from gateway.storage import "
                              "SqliteTransactionStore as S; s = S(sys.argv[1]); asyncio.run(s.open()); "
                              "asyncio.run(s.close())", str(database)], cwd=ROOT, capture_output=True, timeout=30)
    assert created.returncode == 0, created.stderr
    url = f"sqlite:///{database}"
    refused = [
        (("list", "--offset", "99999999999999999999"), "a whole number from 0 to 999999999"),
        (("webhooks", "--offset", "99999999999999999999"), "a whole number from 0 to 999999999"),
        (("list", "--offset", "\u00b2"), "a whole number"), (("list", "--limit", "\u0661\u0660"), "a whole number"),
        (("list", "--to", "9999-12-31"), "--to: to must be a day from 2000-01-01 to 2999-12-31"),
        (("list", "--from", "0001-01-01"), "--from: from must be a day from"),
        (("totals", "--to", "9999-12-31"), "to must be a day from"),
        (("orders", "--from", "0001-01-01"), "from must be a day from"),
        (("export", "--to", "9999-12-31"), "to must be a day from"),
        (("list", "--from", "\u0662\u0660\u0662\u0666-01-01"), "from must be a day written YYYY-MM-DD"),
        (("list", "-q", "x" * 101), "at most 100 characters"),
        (("export", "-o", str(tmp_path / "no" / "such" / "dir.csv")), "-o: cannot write"),
    ]
    for args, says in refused:
        done = payments_cli(url, *args)
        assert (done.returncode, says in done.stderr, "Traceback" in done.stderr) == (2, True, False), (
            args, done.stderr)
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("not a database\n" * 100)
    done = payments_cli(f"sqlite:///{not_a_database}", "list")
    assert done.returncode == 2 and "cannot be read as the gateway's database" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    # Bytes a terminal could not decode, and ids of any length: not found, said briefly.
    for args, code, says in (((b"list", b"-q", b"\xff\xfe07"), 0, "No payments."),
                             ((b"show", b"\xff"), 1, "No payment, order or webhook event"),
                             ((b"show", b"evt_\xff"), 1, "No webhook event"),
                             ((b"resend", b"\xff"), 1, "No webhook event"),
                             (("show", "x" * 5000), 1, "No payment, order or webhook event"),
                             (("show", "ord_" + "x" * 5000), 1, "No order"),
                             (("resend", "evt_" + "x" * 5000), 1, "No webhook event")):
        done = payments_cli(url, *args)
        assert (done.returncode, says in done.stdout) == (code, True), (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stdout) < 300, args


def test_the_commands_start_without_the_web_stack(tmp_path: Path) -> None:
    """`run.py migrate` and `run.py payments …` load no web server, client or metrics code: an
    operator's command answers in well under a second (about twice as fast as with it)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/shop.sqlite3"
    web = ("aiohttp", "aiohttp_cors", "aiohttp_remotes", "aiohttp_sse", "aiohttp_jinja2", "jinja2", "gunicorn",
           "prometheus_client", "yarl")
    for args in (["migrate"], ["payments", "list"], ["payments", "totals", "--json"], ["payments", "--help"]):
        done = subprocess.run([sys.executable, "-X", "importtime", "run.py", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (args, done.stdout, done.stderr[-2000:])
        imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                    if line.startswith("import time:")}
        assert len(imported) > 50 and not sorted(m for m in imported if m.split(".")[0] in web), args
