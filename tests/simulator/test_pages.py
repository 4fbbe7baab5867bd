"""The simulator's pages over HTTP (standalone): the virtual phone's address follows the phone rule."""

from __future__ import annotations

from typing import Any

import pytest

from simulator.app import create_standalone_app
from simulator.settings import load_simulator_settings


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    return await aiohttp_client(create_standalone_app(load_simulator_settings({})))


@pytest.mark.parametrize("typed", ["0712345678", "0712 345 678", "+254-712-345-678"])
async def test_a_phone_typed_in_a_local_form_redirects_to_its_msisdn(client, typed):
    resp = await client.get(f"/simulator/phone/{typed}", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/simulator/phone/254712345678")


async def test_the_phone_of_an_msisdn_shows_its_customer(client):
    resp = await client.get("/simulator/phone/254712345678")
    assert resp.status == 200
    assert 'data-msisdn="254712345678"' in await resp.text()


@pytest.mark.parametrize("raw", ["0712", "254800000000", "0116000000"])
async def test_a_number_that_is_not_a_safaricom_phone_is_404_on_the_picker(client, raw):
    resp = await client.get(f"/simulator/phone/{raw}")
    assert resp.status == 404
    assert "is not a phone number" in await resp.text()


async def test_the_picker_form_without_javascript_goes_to_the_phone(client):
    resp = await client.get("/simulator/phone", params={"phone": "0712345678"}, allow_redirects=False)
    assert resp.status == 302
    resp = await client.get(resp.headers["Location"], allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/simulator/phone/254712345678")
