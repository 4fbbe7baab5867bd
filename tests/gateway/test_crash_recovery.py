"""Money safety across a crash: the gateway process (`python run.py`) is SIGKILLed in the middle of a
burst of STK pushes, with pushes and callbacks in flight, and started again at once on the same
SQLite file. The Daraja simulator runs as its own process, so it remembers every prompt it put on a
phone and how the customer answered; that is the truth the gateway's records are compared with:

- 0 accepted and missing: every push answered 200 with a checkoutRequestId has a stored payment;
- 0 paid and unrecorded: every prompt the customer paid (ResultCode 0) is `completed` at the gateway;
- 0 faked: no prompt that was not paid is `completed` at the gateway;
- 0 pending forever: once everything has settled, no payment is still `pending`.

Timings: scripted customers answer 3 s after their prompt, so the customers of pushes that were in
flight at the kill pay after the gateway is back (a callback sent while it is dead is lost, as with
real Daraja, and for a push whose answer died with the process the gateway could never learn its
id). The restart time is printed; if it ever exceeds the answer delay the explanation of a failure
says which callbacks hit the dead gateway. The first pushes go out at a steady pace, so callbacks
are already flowing into the gateway when the burst and the kill come.

Before comparing, the test checks that the harness did what it claims: the kill came mid-burst
with pushes in flight, some prompts lost their answer with the process, some callbacks were under
way or found the gateway dead, and the restarted gateway served the rest of the burst.

Run: .venv/bin/python -m pytest tests/gateway/test_crash_recovery.py -x -q -s
(the processes' logs are in the test's tmp_path: simulator-1.log, gateway-1.log, gateway-2.log …)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import free_port, sqlite_only
from tests.gateway.crash_harness import (
    Burst,
    Comparison,
    Customer,
    Gateway,
    Simulator,
    compare,
    explain_unrecorded,
    poll,
    run_burst,
    wait_quiet,
    write_scenarios,
)

pytestmark = [pytest.mark.slow, sqlite_only]  # counts what the killed process left in its SQLite file

PUSHES = 600  # one distinct phone each
CONCURRENCY = 100
ANSWER_SECONDS = 4.0  # scripted customers answer this long after their prompt appears
# The first WARM_UP pushes go out at a steady pace over a little more than ANSWER_SECONDS, so that
# callbacks are flowing into the gateway when the rest go out all at once and the kill comes.
WARM_UP = 120
WARM_UP_SECONDS = ANSWER_SECONDS + 0.6
OFFSETS = [i * WARM_UP_SECONDS / WARM_UP if i < WARM_UP else WARM_UP_SECONDS for i in range(PUSHES)]
# Daraja takes this long to answer each push (the prompt is on the phone at once), as the real one
# takes a fraction of a second or more: at any moment of the burst dozens of prompts are out whose
# answers the gateway has not yet got, so a kill always loses some of them.
DARAJA_SECONDS = 0.2

GATEWAY_SETTINGS = {
    "PUSH_LIMIT_PER_PHONE": "0",
    "PUSH_LIMIT_PER_CLIENT": "0",
    "LOOKUP_LIMIT_PER_CLIENT": "0",  # the comparison asks about every accepted id, and counts 404s
    "RECONCILE_AFTER_SECONDS": "1",
    "RECONCILE_INTERVAL_SECONDS": "0.5",
    "RECONCILE_MAX_INTERVAL_SECONDS": "1",
    "PAYMENT_TIMEOUT_SECONDS": "20",
}
SIMULATOR_SETTINGS = {
    "SIMULATOR_AUTO_ANSWER_SECONDS": str(ANSWER_SECONDS),
    "SIMULATOR_CALLBACK_DELAY_SECONDS": "0.2",
    "SIMULATOR_PROMPT_LIFETIME_SECONDS": "60",
    "SIMULATOR_CALLBACK_TIMEOUT_SECONDS": "5",
    "SIMULATOR_LOCK_SUBSCRIBER": "true",
}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Simulator, Gateway, list[Customer]]]:
    """A standalone simulator (started) with PUSHES scripted customers, and a gateway (not started)
    pointed at it. Both are killed at the end, whatever happens."""
    customers = write_scenarios(tmp_path / "customers.json", PUSHES)
    sim = Simulator(free_port(), tmp_path, SIMULATOR_SCENARIOS_FILE=str(tmp_path / "customers.json"),
                    **SIMULATOR_SETTINGS)
    gateway = Gateway(free_port(), sim.url, tmp_path, **GATEWAY_SETTINGS)
    try:
        sim.start()
        yield sim, gateway, customers
    finally:
        gateway.kill()
        sim.kill()


def figures(burst: Burst | None, c: Comparison, waited: float, why: str) -> str:
    lines = []
    if burst is not None:
        lines.append(f"pushes sent: {len(burst.results)} ({CONCURRENCY} at a time, the first {WARM_UP} paced over "
                     f"{WARM_UP_SECONDS:.1f} s, Daraja answering each in {DARAJA_SECONDS} s) in "
                     f"{burst.duration:.1f} s; answers: {burst.by_http()}; "
                     f"refused while down (tried again): {sum(1 for r in burst.results if r.refused)}")
        for n, k in enumerate(burst.kills, 1):
            lines.append(f"kill {n} (+{k.at - burst.kills[0].at:.2f} s): after {k.ok_before} pushes answered 200, "
                         f"{k.in_flight} in flight; gateway "
                         f"answering again {(k.ready_at or k.at) - k.at:.2f} s later (process start to ready "
                         f"{k.start_seconds or 0:.2f} s)")
        during, dead = c.callbacks_around(burst.windows())
        last_ready = burst.windows()[-1][1] if burst.kills else 0.0
        lines.append(f"callbacks under way at a kill: {during}; callbacks that found the gateway dead: {dead}; "
                     "prompts created after the last restart: "
                     f"{sum(1 for p in c.prompts if p['createdAt'] > last_ready)}")
    recorded = len(c.paid) - len(c.paid_unrecorded)
    settled_by: dict[str, int] = {}
    for p in c.paid:
        row = c.rows.get(p["checkoutRequestId"])
        if row is not None and row["status"] == "completed":
            settled_by[row["settled_by"] or "?"] = settled_by.get(row["settled_by"] or "?", 0) + 1
    adopted = sum(1 for a in c.attempts if a["state"] == "adopted")
    lines += [
        f"prompts in the simulator: {len(c.prompts)} (paid {len(c.paid)}, failed {len(c.failed_prompts)}, "
        f"open {sum(1 for p in c.prompts if p['state'] == 'open')}); prompts whose push got no 200 at the "
        f"shop's side (answer lost): {len(c.lost_answers)}",
        f"gateway rows: {len(c.rows)}; paid prompts recorded completed: {recorded}/{len(c.paid)} "
        f"(settled by {settled_by}); attempts adopted by a callback: {adopted}",
        f"push_attempts by state: {c.attempt_states()}; accepted/adopted attempts with no row: "
        f"{len(c.orphan_accepted())}; sending/unknown attempts whose phone has an unrecorded prompt: "
        f"{len(c.open_attempts_with_prompt())}",
        f"ACCEPTED AND MISSING: {len(c.accepted_missing)}; PAID AND UNRECORDED: {len(c.paid_unrecorded)} "
        f"(wrong amount {len(c.paid_wrong_amount)}); FAKED (not paid, completed): {len(c.faked)}; "
        f"PENDING: {len(c.pending)}; rows for ids Daraja never issued: {len(c.phantom_rows)}",
        f"waited {waited:.1f} s for things to settle ({why})",
    ]
    return "\n".join(lines)


@pytest.mark.parametrize("kill_at", [(0.4,), (0.3, 0.5)], ids=["one-kill", "two-kills"])
def test_sigkill_mid_burst_loses_no_payment(world: tuple[Simulator, Gateway, list[Customer]],
                                            kill_at: tuple[float, ...]) -> None:
    """`one-kill` is the scenario as stated (SIGKILL once 40% of the pushes are answered); the crash
    lands at a random point of the gateway's work, so `two-kills` gives a second chance to land in a
    bad spot (0.3 and 0.5), with the second crash while the first one's callbacks are being adopted."""
    sim, gateway, customers = world
    gateway.start()
    sim.fault(count=PUSHES, push="slow", delay=DARAJA_SECONDS)

    thresholds = [int(PUSHES * f) for f in kill_at]
    burst = run_burst(gateway, customers, CONCURRENCY, thresholds, OFFSETS, held=(sim, DARAJA_SECONDS))

    # The harness did what it claims: kills in the middle of the burst, working restarts.
    assert len(burst.kills) == len(thresholds), (f"the burst ended before the kills after {thresholds} pushes "
                                                 f"answered 200: {burst.kills}, {burst.by_http()}\n{gateway.output()}")
    assert all(k.in_flight > 0 for k in burst.kills), f"no push was in flight at a kill: {burst.kills}"
    assert all(k.ready_at for k in burst.kills) and gateway.proc is not None and gateway.proc.poll() is None, \
        f"the gateway did not come back:\n{gateway.output()}"
    last_ready = burst.kills[-1].ready_at or 0.0
    assert any(r.http == 200 and r.finished and r.finished > last_ready for r in burst.results), \
        f"the burst did not go on after the last restart: {burst.by_http()}"

    waited, why = wait_quiet(sim, gateway, timeout=60)
    c = compare(sim, gateway, {r.checkout_request_id: r for r in burst.ok()})
    report = figures(burst, c, waited, why)
    print("\n" + report)

    assert c.lost_answers, "no prompt lost its answer at the kill: the kill did not overlap pushes in flight\n" + report
    assert sum(c.callbacks_around(burst.windows())), \
        "no callback was under way at the kill or sent while the gateway was down\n" + report
    assert not c.accepted_missing, f"{len(c.accepted_missing)} pushes answered 200 have no payment " \
                                   f"(e.g. {c.accepted_missing[:5]})\n{report}"
    # Customers answer ANSWER_SECONDS after their prompt, later than a restart takes, so that the
    # callbacks of pushes whose answer died with the process reach a live gateway. On a machine so
    # loaded that a restart outlasts that, a few may not: those are counted apart and shown, never
    # excused otherwise (README, threat model: the one case no gateway can record).
    unreachable = c.beyond_reach(burst.windows())
    print(f"paid prompts beyond any gateway's reach (answer lost and every callback sent while it was down): "
          f"{len(unreachable)}")
    recordable = [p for p in c.paid_unrecorded if p not in unreachable]
    assert not recordable, f"{len(recordable)} customers paid and the gateway has no completed " \
                           f"payment:\n{explain_unrecorded(c, burst)}\n{report}"
    assert not c.paid_wrong_amount, f"paid prompts recorded with another amount: " \
                                    f"{[p['checkoutRequestId'] for p in c.paid_wrong_amount[:5]]}\n{report}"
    assert not c.faked, f"{len(c.faked)} prompts that were not paid are completed at the gateway\n{report}"
    assert not c.pending, f"{len(c.pending)} payments still pending after {waited:.0f} s " \
                          f"(e.g. {[r['checkout_request_id'] for r in c.pending[:5]]})\n{report}"
    assert not c.phantom_rows, f"rows for ids the simulator never issued: {c.phantom_rows[:5]}\n{report}"


SLOW_PUSHES = 8
SLOW_PAYERS = 6  # the first six pay after the restart; the others cancel


def test_pushes_whose_slow_answers_die_with_the_gateway_are_recorded_when_paid(
        world: tuple[Simulator, Gateway, list[Customer]]) -> None:
    """Daraja answers these pushes after 3 s, but their prompts are already on the phones. The
    gateway is killed while it waits, so each push is written down as an attempt and its answer
    (the checkoutRequestId) is lost. The customers answer after the restart: the payments must be
    recorded as completed from their callbacks, and the cancelled ones never as completed."""
    sim, gateway, _ = world
    gateway.start()
    phones = [f"2547220000{i:02d}" for i in range(SLOW_PUSHES)]  # not in the catalogue: interactive
    sim.fault(count=SLOW_PUSHES, push="slow", delay=3)

    def push(msisdn: str) -> str:
        try:
            resp = requests.post(f"{gateway.url}/stkpush", json={"phone": "0" + msisdn[3:], "amount": 50},
                                 timeout=20)
            return str(resp.status_code)
        except requests.RequestException as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(SLOW_PUSHES) as pool:
        answers = [pool.submit(push, m) for m in phones]
        reached = poll(lambda: sum(1 for p in sim.prompts() if p["state"] == "open") == SLOW_PUSHES, timeout=10)
        assert reached, f"the slow pushes did not all reach the phones: {sim.prompts()}"
        killed_at = time.time()
        gateway.kill()
        restart = gateway.start()
        outcomes = [a.result() for a in answers]
    assert "200" not in outcomes, f"a slow push was answered before the kill: {outcomes}"
    sending = [a for a in gateway.attempts() if a["state"] == "sending"]
    assert len(sending) == SLOW_PUSHES, f"attempts not written down as sending: {gateway.attempts()}"

    prompts = sorted(sim.prompts(), key=lambda p: p["msisdn"])
    for i, p in enumerate(prompts):
        action = ("pin", {"pin": "12345"}) if i < SLOW_PAYERS else ("cancel", None)
        sim.api("POST", f"/prompts/{p['checkoutRequestId']}/{action[0]}", json=action[1])
    waited, why = wait_quiet(sim, gateway, timeout=20, quiet=1.0)
    c = compare(sim, gateway, {})
    report = (f"slow pushes: {SLOW_PUSHES}, answers at the kill: {outcomes}; gateway back "
              f"{(gateway.ready_at or 0) - killed_at:.2f} s after the SIGKILL (start {restart:.2f} s)\n"
              + figures(None, c, waited, why))
    print("\n" + report)

    assert len(c.paid) == SLOW_PAYERS and len(c.failed_prompts) == SLOW_PUSHES - SLOW_PAYERS, report
    assert not c.paid_unrecorded, f"{len(c.paid_unrecorded)} customers paid after the restart and the gateway " \
                                  f"has no completed payment:\n{explain_unrecorded(c, None)}\n{report}"
    for p in c.paid:
        row = c.rows[p["checkoutRequestId"]]
        assert (row["amount"], row["receipt"]) == (p["amount"], p["receipt"]), (row, p)
    assert not c.faked, f"cancelled prompts completed at the gateway: " \
                        f"{[p['checkoutRequestId'] for p in c.faked]}\n{report}"
    assert not c.pending, f"payments still pending: {[r['checkout_request_id'] for r in c.pending]}\n{report}"


def test_only_callbacks_that_never_reached_a_live_gateway_are_beyond_its_reach() -> None:
    """The harness's one excuse, exactly: the push's answer lost AND every callback found the gateway
    dead (sent within a kill's window, or refused or dropped by a process killed after the attempt
    began) and the gateway never stored one."""
    kill, ready = 100.0, 101.5

    def prompt(cid: str, **callback: Any) -> dict[str, Any]:
        return {"checkoutRequestId": cid, "callbacks": [{"status": None, "error": None, "durationMs": 5.0, **callback}]}

    refused = "ClientConnectorError: Cannot connect to host 127.0.0.1:1 ssl:default [Connect call failed]"
    reset = "ClientOSError: [Errno 104] Connection reset by peer"
    prompts = {
        "sent while dead": prompt("a", at=100.5, error=refused),
        "begun just before the kill, refused after it": prompt("b", at=99.99, durationMs=20.0, error=refused),
        "refused before the kill": prompt("c", at=99.90, durationMs=20.0, error=refused),
        "timed out across the kill": prompt("d", at=99.0, durationMs=5000.0, error="timed out"),
        "delivered": prompt("e", at=99.99, status=200),
        "reset mid-request by the kill": prompt("f", at=99.8, durationMs=300.0, error=reset),
        "reset by the kill, but stored first": prompt("g", at=99.8, durationMs=300.0, error=reset),
    }
    c = Comparison([], {}, [], lost_answers=list(prompts.values()), paid_unrecorded=list(prompts.values()))
    c.callbacks_logged = {"g": ["received"]}  # the gateway's to finish after its restart
    beyond = {p["checkoutRequestId"] for p in c.beyond_reach([(kill, ready)])}
    assert beyond == {"a", "b", "f"}
    c.lost_answers = []  # with the push's answer kept, the gateway always had the id to query
    assert c.beyond_reach([(kill, ready)]) == []
