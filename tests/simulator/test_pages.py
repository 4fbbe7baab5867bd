"""The simulator's pages over HTTP: the virtual phone's address follows the phone rule; templates,
scripts and styles come from the simulator's package, standalone and mounted in another app."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from simulator.app import STATIC, create_standalone_app, mount_simulator
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


# -- the simulator's own templates and static files, in both modes -------------------------------------

async def mounted_client(aiohttp_client: Any) -> Any:
    """The simulator mounted in another application (as run.py mounts it beside the gateway)."""
    app = web.Application()
    mount_simulator(app, load_simulator_settings({}))
    return await aiohttp_client(app)


@pytest.fixture(params=["standalone", "mounted"])
async def either(request: pytest.FixtureRequest, aiohttp_client: Any) -> Any:
    if request.param == "standalone":
        return await aiohttp_client(create_standalone_app(load_simulator_settings({})))
    return await mounted_client(aiohttp_client)


@pytest.mark.parametrize("path, kind", [
    ("/simulator/static/js/phone.js", "javascript"), ("/simulator/static/js/simulator.js", "javascript"),
    ("/simulator/static/js/prompt-feed.js", "javascript"), ("/simulator/static/js/sim-format.js", "javascript"),
    ("/simulator/static/css/simulator.css", "css"),
])
async def test_scripts_and_styles_are_served_from_the_simulator_package(either, path, kind):
    resp = await either.get(path)
    assert resp.status == 200
    assert kind in resp.headers["Content-Type"]
    assert await resp.read() == (STATIC / path.removeprefix("/simulator/static/")).read_bytes()


@pytest.mark.parametrize("path, script", [("/simulator", "simulator.js"), ("/simulator/phone", "simulator.js"),
                                          ("/simulator/phone/254708374149", "phone.js")])
async def test_pages_render_from_the_package_templates_and_load_modules(either, path, script):
    resp = await either.get(path)
    assert resp.status == 200
    page = await resp.text()
    assert f'<script type="module" src="/simulator/static/js/{script}"></script>' in page
    assert '<link rel="stylesheet" href="/simulator/static/css/simulator.css">' in page


def test_templates_and_static_files_are_package_data():
    package = resources.files("simulator")
    for name in ("phone.html", "phone_picker.html", "simulator.html", "sim_base.html", "_catalogue.html"):
        assert package.joinpath("templates", name).is_file(), name
    for name in ("js/phone.js", "js/simulator.js", "js/prompt-feed.js", "js/sim-format.js", "css/simulator.css"):
        assert package.joinpath("static", name).is_file(), name
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'simulator = ["*.json", "templates/*", "static/*/*"]' in pyproject
