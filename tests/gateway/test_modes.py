"""The same gateway in sandbox and production modes: the simulator and its pages are not mounted,
and pointed (MPESA_BASE_URL) at a standalone simulator, a whole payment works unchanged."""

from __future__ import annotations

import json
import re

import pytest

from gateway.config import SANDBOX_PASSKEY, ConfigError
from run import build_app, load
from simulator.app import create_standalone_app
from simulator.settings import load_simulator_settings
from tests.conftest import app_env, free_port


async def standalone_daraja(aiohttp_server, tmp_path, **env):
    settings = load_simulator_settings(app_env(tmp_path, MPESA_CONSUMER_KEY="live-key",
                                               MPESA_CONSUMER_SECRET="live-secret", **env))
    return await aiohttp_server(create_standalone_app(settings))


async def test_sandbox_mode_pays_through_any_daraja_base_url_without_the_simulator_mounted(
        start_app, aiohttp_server, tmp_path):
    daraja = await standalone_daraja(aiohttp_server, tmp_path, SIMULATOR_AUTO_ANSWER_SECONDS="0.2",
                                     SIMULATOR_CALLBACK_DELAY_SECONDS="0.05")
    port = free_port()
    running = await start_app(PORT=str(port), MPESA_ENV="sandbox", MPESA_CONSUMER_KEY="live-key",
                              MPESA_CONSUMER_SECRET="live-secret", MPESA_BASE_URL=str(daraja.make_url("")),
                              CALLBACK_URL=f"http://127.0.0.1:{port}/hooks/mpesa/s3cr3t-path")
    assert running.settings.passkey == SANDBOX_PASSKEY and running.settings.shortcode == "174379"
    for path in ("/simulator", "/simulator/phone", "/daraja/oauth/v1/generate"):
        assert (await running.client.get(path)).status == 404, path
    page = await (await running.client.get("/pay.html")).text()
    data = re.search(r'<script type="application/json" id="checkout-config">(.*?)</script>', page, re.S)
    assert data is not None
    config = json.loads(data[1])
    assert (config["simulator"], config["phonePageBase"]) == (False, None)  # no virtual phone outside the simulator
    pushed = await running.push("0700000000", 100)
    done = await running.wait_status(pushed["checkoutRequestId"], "completed")
    assert done["transaction_id"]
    assert (await running.client.get("/health")).status == 200


async def test_production_mode_refuses_plain_http_callbacks_and_never_mounts_the_simulator(start_app):
    with pytest.raises(ConfigError, match="CALLBACK_URL must be an https URL"):
        await start_app(MPESA_ENV="production", MPESA_CONSUMER_KEY="k", MPESA_CONSUMER_SECRET="s",
                        MPESA_BUSINESS_SHORTCODE="600000", MPESA_PASSKEY="p",
                        CALLBACK_URL="http://shop.example.com/cb")
    running = await start_app(MPESA_ENV="production", MPESA_CONSUMER_KEY="k", MPESA_CONSUMER_SECRET="s",
                              MPESA_BUSINESS_SHORTCODE="600000", MPESA_PASSKEY="p",
                              CALLBACK_URL="https://shop.example.com/mpesa/cb")
    assert running.settings.base_url == "https://api.safaricom.co.ke"
    assert (await running.client.get("/simulator")).status == 404
    assert (await running.client.get("/pay.html")).status == 200


@pytest.mark.parametrize("path, route", [
    ("/stkpush", "/stkpush"), ("/stkpush/status", "/stkpush/status"), ("/health", "/health"),
    ("/stkpush/ws_CO_1/events", "/stkpush/{checkout_request_id}/events"), ("/pay.html", "/pay.html"),
    ("/confirmation.html", "/confirmation.html"), ("/static/js/x", "/static"), ("/daraja/cb", "/daraja"),
    ("/simulator/api/cb", "/simulator"),
])
def test_a_callback_path_that_collides_with_a_route_is_refused(tmp_path, path, route):
    port = free_port()
    both_settings = load(app_env(tmp_path, PORT=str(port), CALLBACK_URL=f"http://127.0.0.1:{port}{path}"))
    with pytest.raises(ConfigError) as refused:
        build_app(*both_settings)
    assert str(refused.value).startswith(f"CALLBACK_URL's path collides with the route {route}")


def test_a_callback_path_of_its_own_is_accepted(tmp_path):
    port = free_port()
    for path in ("/mpesa/callback/8f3c0a", "/stkpushes", "/healthz/cb", "/static-cb"):
        build_app(*load(app_env(tmp_path, PORT=str(port), CALLBACK_URL=f"http://127.0.0.1:{port}{path}")))
