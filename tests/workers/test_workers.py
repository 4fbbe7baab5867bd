"""Several processes, one gateway: `run.py --workers N` on one port, and two instances on two ports
(standing for two machines) on one PostgreSQL database, against one standalone simulator. Each
test runs real processes over loopback HTTP and checks what the shop and Daraja would see."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.migrations import MIGRATIONS
from gateway.payments import iso
from tests.conftest import MALFORMED_REQUESTS, send_raw
from tests.gateway.crash_harness import ROOT, RUN, clean_env
from tests.workers.harness import Instance, Simulator, free_port, oauth_requests, push, query, wait_for

pytestmark = pytest.mark.slow

Started = Callable[..., Instance]


@pytest.fixture
def sim(tmp_path: Path) -> Any:
    simulator = Simulator(free_port(), tmp_path, SIMULATOR_LOCK_SUBSCRIBER="false",
                          SIMULATOR_AUTO_ANSWER_SECONDS="600", SIMULATOR_PROMPT_LIFETIME_SECONDS="600",
                          SIMULATOR_CALLBACK_DELAY_SECONDS="0")
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.kill()


@pytest.fixture
async def instances(sim: Simulator, postgres_url: str, tmp_path: Path) -> AsyncIterator[Started]:
    """`start(name, **settings)` starts a gateway on the test's database; all are stopped at the end."""
    started: list[Instance] = []

    def start(name: str, *, workers: int | None = None, **settings: str) -> Instance:
        instance = Instance(name, sim, postgres_url, tmp_path, workers=workers, **settings)
        started.append(instance)
        instance.start()
        return instance

    try:
        yield start
    finally:
        for instance in started:
            instance.shutdown()


def phones(count: int, first: int = 254711000000) -> list[str]:
    return [str(first + i) for i in range(count)]


def run_py(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, RUN, *args], cwd=ROOT, env=clean_env(**env), capture_output=True,
                          text=True, timeout=30)


# -- run.py --workers ------------------------------------------------------------------------------

def test_workers_are_refused_where_they_cannot_share(tmp_path: Path) -> None:
    sqlite = run_py("--workers", "2", DATABASE_URL=f"sqlite:///{tmp_path}/x.sqlite3", PORT=str(free_port()))
    assert sqlite.returncode == 2 and "need a database they can share" in sqlite.stderr, sqlite.stderr
    built_in = run_py("--workers", "2", DATABASE_URL="postgresql://nobody@127.0.0.1:1/x", PORT=str(free_port()))
    assert built_in.returncode == 2 and "cannot share the built-in simulator" in built_in.stderr, built_in.stderr
    for bad in ("0", "65", "x"):
        done = run_py("--workers", bad, PORT=str(free_port())) if bad != "x" else \
            run_py(PORT=str(free_port()), WORKERS="two")
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert "WORKERS (--workers) must be a whole number" in done.stderr or "invalid int" in done.stderr
        assert "Traceback" not in done.stderr


async def test_one_port_served_by_two_workers(instances: Started, postgres_url: str) -> None:
    gateway = instances("workers", workers=2)
    assert await wait_for(lambda: asyncio.sleep(0, len(gateway.children()) == 2), 10)  # both forked and running
    workers = gateway.children()
    answers: list[tuple[int, dict[str, Any]]] = []
    senders: list[Any] = []
    # Which worker accepts a connection is the kernel's choice (they share one listening socket):
    # batches of new connections until both have served, at most 10 × 60 pushes.
    for batch in range(10):
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            answers += await asyncio.gather(*(push(session, gateway.url, phone)
                                              for phone in phones(60, first=254711000000 + batch * 100)))
        # Each worker signs the pushes it sends with its own name (host/pid/random).
        senders = await query(postgres_url, "SELECT sender, COUNT(*) FROM push_attempts GROUP BY sender")
        if len(senders) == 2:
            break
    assert [code for code, _ in answers] == [200] * len(answers), [a for a in answers if a[0] != 200][:3]
    rows = await query(postgres_url, "SELECT checkout_request_id FROM transactions")
    assert {r[0] for r in rows} == {body["checkoutRequestId"] for _, body in answers}
    assert len(senders) == 2 and {str(w) for w in workers} == {r[0].split("/")[1] for r in senders}, senders
    # A request the HTTP parser refuses is logged by the worker as one line, with no traceback.
    for raw in MALFORMED_REQUESTS:
        assert send_raw(gateway.port, raw).startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")), raw[:40]
    assert await wait_for(lambda: asyncio.sleep(0, gateway.log_text().count("malformed HTTP request from") == 3), 10)
    assert "Traceback" not in gateway.log_text() and "Error handling request" not in gateway.log_text()


async def test_processes_starting_at_once_on_an_empty_database_migrate_it_once(
        sim: Simulator, postgres_url: str, tmp_path: Path) -> None:
    a = Instance("a", sim, postgres_url, tmp_path, workers=3)
    b = Instance("b", sim, postgres_url, tmp_path)
    try:
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        versions = await query(postgres_url, "SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in versions] == list(range(len(MIGRATIONS)))
        upgraded = [line for line in (a.log_text() + b.log_text()).splitlines() if "database upgraded" in line]
        assert len(upgraded) == len(MIGRATIONS), upgraded  # each version applied by one of the four processes
    finally:
        a.shutdown()
        b.shutdown()


async def test_the_metrics_of_several_workers_are_summed_by_any_of_them(instances: Started) -> None:
    gateway = instances("metered", workers=2, METRICS_ENABLED="true")
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(push(session, gateway.url, p) for p in phones(40)))
        assert [code for code, _ in answers] == [200] * 40
        seen = set()
        for _ in range(6):  # new connections: the answers come from either worker
            async with aiohttp.ClientSession() as fresh, fresh.get(f"{gateway.url}/metrics") as resp:
                text = await resp.text()
            seen.add(next(line for line in text.splitlines()
                          if line.startswith('mpesa_stk_pushes_total{outcome="accepted"}')))
            # The reconciler's gauges: one series each for the live workers (the worst lag, the
            # latest pass), not one per process.
            reconciler = [line for line in text.splitlines() if line.startswith("mpesa_reconcile_")]
            assert sorted(line.split(" ")[0] for line in reconciler) == [
                'mpesa_reconcile_lag_seconds{kind="given_up"}', 'mpesa_reconcile_lag_seconds{kind="pending"}',
                "mpesa_reconcile_last_pass_timestamp_seconds"], reconciler
            last_pass = next(line for line in reconciler if line.startswith("mpesa_reconcile_last_pass"))
            assert time.time() - 10 < float(last_pass.split(" ")[1]) <= time.time() + 1, reconciler
    assert seen == {'mpesa_stk_pushes_total{outcome="accepted"} 40.0'}, seen


# -- one OAuth token for every process ------------------------------------------------------------

async def test_a_thousand_pushes_over_two_instances_cause_one_oauth_request(instances: Started, sim: Simulator) -> None:
    a, b = instances("a"), instances("b", workers=2)
    numbers = phones(1000)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        answers = await asyncio.gather(*(push(session, (a.url, b.url)[i % 2], p) for i, p in enumerate(numbers)))
        assert [code for code, _ in answers].count(200) == 1000, [x for x in answers if x[0] != 200][:3]
        assert oauth_requests(sim) == 1
        # Daraja revokes the token (as when a new one is issued elsewhere): one refresh, shared too.
        sim.api("POST", "/tokens/expire")
        more = await asyncio.gather(*(push(session, (a.url, b.url)[i % 2], p)
                                      for i, p in enumerate(phones(200, first=254712000000))))
        assert [code for code, _ in more].count(200) == 200, [x for x in more if x[0] != 200][:3]
    assert oauth_requests(sim) == 2


# -- a change seen everywhere at once -------------------------------------------------------------

async def read_events(resp: aiohttp.ClientResponse, seen: list[tuple[float, dict[str, Any]]]) -> None:
    async for line in resp.content:
        text = line.decode().strip()
        if text.startswith("data:"):
            seen.append((time.monotonic(), json.loads(text[5:])))


async def test_a_callback_on_one_instance_reaches_a_live_page_on_another_at_once(
        instances: Started, sim: Simulator) -> None:
    b = instances("b")
    # A's pushes name B's callback URL: Daraja's callback lands on the other machine.
    a = instances("a", CALLBACK_URL=f"http://127.0.0.1:{b.port}/mpesa/callback")
    async with aiohttp.ClientSession() as session:
        code, started = await push(session, a.url, "254711000001", 25)
        assert code == 200
        cid, token = started["checkoutRequestId"], started["paymentToken"]
        seen: list[tuple[float, dict[str, Any]]] = []
        async with session.get(f"{a.url}/stkpush/{cid}/events", params={"paymentToken": token}) as stream:
            reader = asyncio.ensure_future(read_events(stream, seen))
            assert await wait_for(lambda: asyncio.sleep(0, bool(seen)), 5)
            assert seen[0][1]["status"] == "pending"
            paid_at = time.monotonic()
            sim.api("POST", f"/prompts/{cid}/pin", json={"pin": "12345"})
            assert await wait_for(lambda: asyncio.sleep(0, len(seen) > 1), 8), seen
            reader.cancel()
    latency = seen[1][0] - paid_at
    assert seen[1][1]["status"] == "completed" and seen[1][1]["MpesaReceiptNumber"], seen
    print(f"\ncallback on B, live page on A: completed {latency * 1000:.0f} ms after the PIN")
    # No polling behind a live page (A's stream re-reads nothing for minutes, its reconciler waits
    # 600 s): only B's notice can have told A. 4 s leaves a loaded machine room for the whole chain.
    assert latency < 4.0


# -- each due payment asked about by one process --------------------------------------------------

async def test_each_due_payment_is_queried_by_one_instance_and_recovery_runs_once(
        instances: Started, sim: Simulator, postgres_url: str) -> None:
    quick = {"RECONCILE_AFTER_SECONDS": "0.5", "RECONCILE_INTERVAL_SECONDS": "0.5",
             "RECONCILE_MAX_INTERVAL_SECONDS": "1", "PAYMENT_TIMEOUT_SECONDS": "300"}
    a, b = instances("a", **quick), instances("b", **quick)
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(push(session, (a.url, b.url)[i % 2], p) for i, p in enumerate(phones(40))))
    ids = [body["checkoutRequestId"] for code, body in answers if code == 200]
    assert len(ids) == 40
    await asyncio.sleep(6)  # several reconcile passes in each process: every payment is due again and again
    rows = await query(postgres_url, "SELECT checkout_request_id, query_attempts FROM transactions")
    claimed = {r[0]: r[1] for r in rows}
    entries = sim.api("GET", "/journal", params={"kind": "request", "limit": "2000"})
    asked: dict[str, int] = {}
    for e in entries:
        if e["url"].startswith("/mpesa/stkpushquery"):
            asked[e["checkoutRequestId"]] = asked.get(e["checkoutRequestId"], 0) + 1
    assert sum(asked.values()) >= 2 * len(ids), asked  # each payment was due several times
    # One query per claimed slot: no slot was queried by both processes (a query may still be on
    # its way for the last claim).
    over = {cid: (asked.get(cid, 0), n) for cid, n in claimed.items() if not n - 1 <= asked.get(cid, 0) <= n}
    assert not over, over


async def test_instances_on_one_database_share_the_reconcilers_query_rate(
        instances: Started, sim: Simulator) -> None:
    """Two instances, RECONCILE_QUERIES_PER_SECOND=4, sixty payments due again and again: Daraja
    gets about 4 STK queries a second in all (each instance 2, from their heartbeats' count of
    the processes alive), not 4 from each (8 a second, as before the rate was shared)."""
    rate = 4
    busy = {"RECONCILE_QUERIES_PER_SECOND": str(rate), "RECONCILE_AFTER_SECONDS": "0.3",
            "RECONCILE_INTERVAL_SECONDS": "0.5", "RECONCILE_MAX_INTERVAL_SECONDS": "1",
            "PAYMENT_TIMEOUT_SECONDS": "300"}
    a, b = instances("a", **busy), instances("b", **busy)
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(push(session, (a.url, b.url)[i % 2], p) for i, p in enumerate(phones(60))))
    assert [code for code, _ in answers] == [200] * 60

    def stk_queries() -> int:
        entries = sim.api("GET", "/journal", params={"kind": "request", "limit": "2000"})
        return sum(1 for e in entries if e["url"].startswith("/mpesa/stkpushquery"))

    shared = "2 processes share RECONCILE_QUERIES_PER_SECOND=4"
    assert await wait_for(lambda: asyncio.sleep(0, shared in a.log_text() and shared in b.log_text()), 10), \
        (a.log_text()[-2000:], b.log_text()[-2000:])
    await asyncio.sleep(1.5)  # what each earned before sharing is spent
    started, before = time.monotonic(), stk_queries()
    await asyncio.sleep(4)
    sent, elapsed = stk_queries() - before, time.monotonic() - started
    # Both budgets may hold one second's worth (2 each) and a pass may be under way at each end.
    assert rate * elapsed * 0.5 <= sent <= rate * elapsed + 2 * rate, (sent, elapsed)


async def test_start_up_recovery_runs_in_one_instance(sim: Simulator, postgres_url: str, tmp_path: Path,
                                                      instances: Started) -> None:
    """What a crash left half done, found by the first instance to start and by no other: a push
    Daraja accepted whose payment was never stored (stored once), and a callback kept but not yet
    verified (Daraja asked about it once, not once per instance)."""
    first = instances("first")
    sim.fault(count=2, query="slow", delay=3)  # a verification takes a while: both instances could start one
    async with aiohttp.ClientSession() as session:
        answers = [await push(session, first.url, phone, 30) for phone in ("254711000009", "254711000010")]
    assert [code for code, _ in answers] == [200, 200]
    lost, unverified = (body["checkoutRequestId"] for _, body in answers)
    first.stop()
    await query(postgres_url, "DELETE FROM transactions WHERE checkout_request_id = $1", lost)
    callback = {"Body": {"stkCallback": {
        "MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": unverified, "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.", "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 30}, {"Name": "MpesaReceiptNumber", "Value": "TST0000001"},
            {"Name": "PhoneNumber", "Value": 254711000010}]}}}}
    await query(postgres_url, "INSERT INTO callback_log (checkout_request_id, received_at, outcome, body) "
                              "VALUES ($1, $2, 'verifying', $3)",
                unverified, iso(time.time() - 60), json.dumps(callback))
    await query(postgres_url, "DELETE FROM leases")
    a, b = Instance("a", sim, postgres_url, tmp_path), Instance("b", sim, postgres_url, tmp_path)
    try:
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        assert await wait_for(lambda: _row_exists(postgres_url, lost), 12)

        async def verifications() -> list[dict[str, Any]]:  # (journaled once answered, 3 s after it was asked)
            entries = sim.api("GET", "/journal", params={"kind": "request", "limit": "2000"})
            return [e for e in entries if e["url"].startswith("/mpesa/stkpushquery") and
                    e["checkoutRequestId"] == unverified]

        assert await wait_for(verifications, 12), "Daraja was never asked about the callback to verify"
        # Time for a second instance's query, had one started alongside (3 s to answer); the next
        # start-up pass is 15 s away.
        await asyncio.sleep(4)
        repaired = [line for line in (a.log_text() + b.log_text()).splitlines() if "REPAIRED" in line]
        assert len(repaired) == 1, repaired
        asked = await verifications()
        assert len(asked) == 1, f"Daraja asked {len(asked)} times about the one callback to verify"
    finally:
        a.shutdown()
        b.shutdown()


async def _row_exists(database_url: str, cid: str) -> bool:
    return bool(await query(database_url, "SELECT 1 FROM transactions WHERE checkout_request_id = $1", cid))


# -- limits, idempotency, orders and the outbox, shared ---------------------------------------------

async def test_limits_are_counted_across_instances(instances: Started) -> None:
    a, b = instances("a", PUSH_LIMIT_PER_PHONE="3"), instances("b", PUSH_LIMIT_PER_PHONE="3")
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(push(session, (a.url, b.url)[i % 2], "254711000100") for i in range(12)))
        codes = sorted(code for code, _ in answers)
        assert codes == [200] * 3 + [429] * 9, codes
        per_client = {"PUSH_LIMIT_PER_CLIENT": "5"}
        c, d = instances("c", **per_client), instances("d", **per_client)
        answers = await asyncio.gather(*(push(session, (c.url, d.url)[i % 2], p)
                                         for i, p in enumerate(phones(12, first=254711000200))))
        codes = sorted(code for code, _ in answers)
    assert codes == [200] * 5 + [429] * 7, codes


async def test_an_idempotency_key_is_honoured_by_every_instance(instances: Started, sim: Simulator) -> None:
    a, b = instances("a"), instances("b")
    headers = {"Idempotency-Key": "order-77-attempt-1"}
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(push(session, (a.url, b.url)[i % 2], "254711000300", 40, headers=headers)
                                         for i in range(6)))
    ids = {body.get("checkoutRequestId") for code, body in answers if code == 200}
    assert len(ids) == 1, answers
    assert len([p for p in sim.prompts() if p["msisdn"] == "254711000300"]) == 1


async def test_one_push_per_order_across_instances(instances: Started, sim: Simulator) -> None:
    key = {"SHOP_API_KEY": "k" * 32}
    a, b = instances("a", **key), instances("b", **key)
    auth = {"Authorization": "Bearer " + "k" * 32}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{a.url}/orders", json={"amount": 90, "reference": "INV-9"}, headers=auth) as resp:
            assert resp.status == 201, await resp.text()
            order = await resp.json()

        async def order_push(base: str, phone: str) -> int:
            async with session.post(f"{base}/stkpush", json={"orderId": order["orderId"], "phone": phone}) as resp:
                return resp.status

        codes = await asyncio.gather(*(order_push((a.url, b.url)[i % 2], f"25471100040{i}") for i in range(8)))
    assert sorted(codes) == [200] + [409] * 7, codes
    assert len([p for p in sim.prompts() if p["amount"] == 90]) == 1


async def test_each_webhook_is_delivered_once_by_one_instance(instances: Started, sim: Simulator,
                                                              tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: aiohttp.web.Request) -> aiohttp.web.Response:
        received.append(await request.json())
        return aiohttp.web.Response(text="ok")

    from aiohttp import web
    app = web.Application()
    app.router.add_post("/hooks", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        shop = {"MERCHANT_WEBHOOK_URL": f"http://127.0.0.1:{port}/hooks", "MERCHANT_WEBHOOK_SECRET": "s" * 32}
        a, b = instances("a", **shop), instances("b", **shop)
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(push(session, (a.url, b.url)[i % 2], p)
                                             for i, p in enumerate(phones(20, first=254711000500))))
        ids = [body["checkoutRequestId"] for _, body in answers]
        for cid in ids:
            sim.api("POST", f"/prompts/{cid}/pin", json={"pin": "12345"})
        assert await wait_for(lambda: asyncio.sleep(0, len(received) >= 20), 20), len(received)
        await asyncio.sleep(2)  # a second delivery of any of them would arrive by now
    finally:
        await runner.cleanup()
    events = [r["id"] for r in received]
    assert len(events) == len(set(events)), "an event was delivered twice"
    completed = sorted(r["data"]["checkoutRequestId"] for r in received if r["type"] == "payment.completed")
    assert completed == sorted(ids), [r["type"] for r in received]
