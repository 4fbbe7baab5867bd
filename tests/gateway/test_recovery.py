"""The recovery pass (at start-up and every few seconds) finishes what a crash left half done:
an accepted push with no payment row, a callback kept but never matched, a push whose answer
never came, a verification cut short."""

from __future__ import annotations

import json
import time
from contextlib import AbstractAsyncContextManager

from gateway.payments import iso
from gateway.storage import StoreTransaction, utc_now
from tests.conftest import Running
from tests.gateway.test_callback_trust import failure, final_outcomes

SLOW_RECONCILE = {"RECONCILE_AFTER_SECONDS": "30", "SIMULATOR_PROMPT_LIFETIME_SECONDS": "30"}


def database(running: Running) -> AbstractAsyncContextManager[StoreTransaction]:
    """A unit of work on the app's database (SQLite or PostgreSQL), committed at the block's end:
    for writing what a crash left behind."""
    return running.payments.store.transaction()


def long_ago(seconds: float = 60.0) -> str:
    return iso(time.time() - seconds)


async def test_accepted_push_without_a_payment_row_is_repaired_and_settled_by_query(start_app):
    running = await start_app(**SLOW_RECONCILE)
    pushed = await running.push("0700000007", 100)  # pays; its callback never comes
    cid = pushed["checkoutRequestId"]
    async with database(running) as db:  # what an earlier version's shared-connection rollback left behind
        await db.execute("DELETE FROM transactions WHERE checkout_request_id = ?", (cid,))
    assert (await running.status(cid))["http"] == 404
    await running.payments.recover()  # (the periodic pass may get there first: either way, once)
    done = await running.wait_status(cid, "completed", timeout=5)
    stored = await running.payments.get(cid)
    assert (stored.amount, stored.phone, stored.settled_by) == (100, "254700000007", "query")
    assert done["transaction_id"] is None  # a query carries no receipt


async def test_a_repaired_payment_takes_its_callback_once_a_query_confirms_it(start_app):
    running = await start_app(**SLOW_RECONCILE)
    cid = (await running.push("0712345678", 100))["checkoutRequestId"]
    async with database(running) as db:
        await db.execute("DELETE FROM transactions WHERE checkout_request_id = ?", (cid,))
    await running.payments.recover()
    assert (await running.payments.get(cid)).merchant_request_id == ""  # not known: no direct match
    prompt = running.sim.enter_pin(cid, "12345")
    assert await final_outcomes(running, cid) == ["verified"]
    stored = await running.payments.get(cid)
    assert (stored.status, stored.receipt) == ("completed", prompt.receipt)


async def test_a_callback_kept_but_never_matched_is_matched_at_recovery(start_app):
    running = await start_app(**SLOW_RECONCILE)
    running.sim.add_faults({"callback": "never"}, count=1)
    cid = (await running.push("0712345678", 100))["checkoutRequestId"]
    prompt = running.sim.enter_pin(cid, "12345")
    body = {"Body": {"stkCallback": {
        "MerchantRequestID": prompt.merchant_request_id, "CheckoutRequestID": cid, "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 100},
                                      {"Name": "MpesaReceiptNumber", "Value": prompt.receipt},
                                      {"Name": "TransactionDate", "Value": int(prompt.transaction_date)},
                                      {"Name": "PhoneNumber", "Value": 254712345678}]}}}}
    async with database(running) as db:  # kept, then the process died before matching it
        await db.execute("INSERT INTO callback_log (checkout_request_id, received_at, outcome, body) "
                         "VALUES (?, ?, ?, ?)",
                         (cid, long_ago(), "received", json.dumps(body)))
    await running.payments.recover()
    stored = await running.payments.get(cid)
    assert (stored.status, stored.receipt, stored.settled_by) == ("completed", prompt.receipt, "callback")
    assert [r["outcome"] for r in await running.payments.store.callback_log(cid)] == ["applied"]


async def test_a_push_whose_answer_never_came_is_kept_for_adoption(start_app):
    running = await start_app()
    async with database(running) as db:
        await db.execute("INSERT INTO push_attempts (phone, amount, account_reference, description, state, created_at, "
                         "created_epoch) VALUES ('254712345678', 10, 'R', 'D', 'sending', ?, ?)",
                         (utc_now(), time.time() - 3600))
        await db.execute("INSERT INTO push_attempts (phone, amount, account_reference, description, state, created_at, "
                         "created_epoch) VALUES ('254712345679', 10, 'R', 'D', 'sending', ?, ?)",
                         (utc_now(), time.time()))
    await running.payments.recover()
    # The stale one is marked lost (kept for a verified adoption); the fresh one may still be answered.
    assert await running.payments.store.attempt_counts() == {"unknown": 1, "sending": 1}


async def test_a_verification_cut_short_is_finished_at_recovery(start_app):
    running = await start_app(**SLOW_RECONCILE)
    cid = (await running.push("0712345678", 100))["checkoutRequestId"]
    forged = failure(cid, running.sim.prompts[cid].merchant_request_id)
    async with database(running) as db:
        await db.execute("INSERT INTO callback_log (checkout_request_id, received_at, outcome, body, note) "
                         "VALUES (?, ?, 'verifying', ?, 'a failure is confirmed first')",
                         (cid, long_ago(), json.dumps(forged)))
    await running.payments.recover()
    assert await final_outcomes(running, cid) == ["unverified"]
    assert (await running.payments.get(cid)).status == "pending"


async def test_periodic_passes_look_only_at_attempts_made_since_the_previous_pass(start_app):
    """The join of every attempt ever made against the payments grows with the shop's history
    (about a second at 1,000,000 pushes): the periodic passes look at the newer attempts only, the
    start-up and hourly ones (`everything`) at all of them."""
    running = await start_app(**SLOW_RECONCILE)
    older = (await running.push("0700000007", 100))["checkoutRequestId"]
    await running.payments.recover()
    newer = (await running.push("0700000008", 100))["checkoutRequestId"]
    async with database(running) as db:
        await db.execute("DELETE FROM transactions WHERE checkout_request_id IN (?, ?)", (older, newer))
    assert (await running.payments.recover(everything=False))["repaired"] == 1
    assert await running.payments.get(newer) is not None and await running.payments.get(older) is None
    assert (await running.payments.recover())["repaired"] == 1
    assert await running.payments.get(older) is not None
