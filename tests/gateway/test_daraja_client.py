"""The gateway's Daraja client against the real simulator: one OAuth token shared by everyone,
refreshed before it expires, and renewed once when Daraja says it is invalid."""

from __future__ import annotations

import asyncio

from gateway.daraja.errors import DarajaError


async def test_a_thousand_concurrent_pushes_on_a_cold_cache_fetch_one_token(running):
    phones = [f"2547{i:08d}" for i in range(20_000_000, 20_001_000)]
    results = await asyncio.gather(*(running.push(phone, 10) for phone in phones))
    assert all(r["success"] for r in results), [r for r in results if not r["success"]][:3]
    assert running.sim.tokens_issued == 1
    assert running.payments.daraja.tokens.fetches == 1
    assert len({r["checkoutRequestId"] for r in results}) == 1000
    assert await running.payments.store.count() == 1000


async def test_revoked_token_is_refreshed_once_and_the_call_retried(running):
    assert (await running.push("254711000001", 10))["success"]
    running.sim.revoke_tokens()  # Daraja now answers 404.001.03 to the cached token
    assert (await running.push("254711000002", 10))["success"]
    assert running.sim.tokens_issued == 2


async def test_token_is_refreshed_before_it_expires(start_app):
    running = await start_app(SIMULATOR_TOKEN_LIFETIME_SECONDS="2")  # refreshed after 1.6 s
    assert (await running.push("254711000003", 10))["success"]
    await asyncio.sleep(1.7)
    assert (await running.push("254711000004", 10))["success"]
    assert running.sim.tokens_issued == 2


async def test_query_reads_both_pending_forms_as_pending(start_app):
    for profile, cancelled in (("legacy", "Request cancelled by user"), ("current", "Request Cancelled by user.")):
        running = await start_app(SIMULATOR_PROFILE=profile)
        pushed = await running.push("254711000005", 10)
        result = await running.payments.daraja.stk_query(pushed["checkoutRequestId"])
        assert result.pending is True, profile
        await running.client.post(f"/simulator/api/prompts/{pushed['checkoutRequestId']}/cancel")
        settled = await running.payments.daraja.stk_query(pushed["checkoutRequestId"])
        assert (settled.pending, settled.result_code, settled.result_desc) == (False, "1032", cancelled)


async def test_query_for_an_unknown_id_is_a_typed_daraja_error(running):
    try:
        await running.payments.daraja.stk_query("ws_CO_000")
    except DarajaError as exc:
        assert (exc.http_status, exc.error_code, exc.error_message) == \
            (400, "400.002.02", "Bad Request - Invalid CheckoutRequestID")
    else:
        raise AssertionError("expected a DarajaError")
