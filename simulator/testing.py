"""Run the Daraja simulator inside your own test suite, as moto does for AWS.

    from simulator.testing import start_simulator

    with start_simulator() as daraja:          # a real HTTP server on a free loopback port
        client = MyDarajaClient(base_url=daraja.base_url, key=daraja.consumer_key, ...)
        checkout_id = client.stk_push("254708374149", 10, callback_url=...)
        daraja.pin(checkout_id)                # the customer types 12345

With pytest, the installed plugin gives a `daraja_simulator` fixture: one server per session,
its state reset before every test. Override the `daraja_simulator_env` fixture (session scope)
to change settings, e.g. {"SIMULATOR_AUTO_ANSWER_SECONDS": "1"}.

The server runs in a background thread with its own event loop, so synchronous clients
(requests, the Django/Flask test client) and asynchronous ones can both call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .app import create_standalone_app
from .cli import Control
from .settings import load_simulator_settings

# Quick by default: scripted numbers answer after 0.2 s and callbacks follow 0.05 s later.
TEST_DEFAULTS = {
    "SIMULATOR_AUTO_ANSWER_SECONDS": "0.2",
    "SIMULATOR_CALLBACK_DELAY_SECONDS": "0.05",
    "SIMULATOR_LATE_CALLBACK_SECONDS": "1",
    "SIMULATOR_PROMPT_LIFETIME_SECONDS": "30",
}


@dataclass
class RunningSimulator:
    base_url: str  # give this to your Daraja client instead of https://sandbox.safaricom.co.ke
    consumer_key: str
    consumer_secret: str
    shortcode: str
    passkey: str
    pin_code: str
    control: Control

    def prompts(self, msisdn: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("msisdn", msisdn), ("state", state)) if v}
        found: list[dict[str, Any]] = self.control.call("GET", "/prompts", params=params)
        return found

    def prompt(self, checkout_request_id: str) -> dict[str, Any]:
        return self._object("GET", f"/prompts/{checkout_request_id}")

    def wait_for_prompt(self, msisdn: str, timeout: float = 10.0) -> dict[str, Any]:
        """The newest open prompt on `msisdn`, once it has arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.prompts(msisdn=msisdn, state="open")
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no prompt reached {msisdn} in {timeout} s")
            time.sleep(0.05)

    def wait_until_settled(self, checkout_request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            prompt = self.prompt(checkout_request_id)
            if prompt["state"] == "settled":
                return prompt
            if time.monotonic() > deadline:
                raise TimeoutError(f"{checkout_request_id} still open after {timeout} s")
            time.sleep(0.05)

    def pin(self, checkout_request_id: str, pin: str | None = None) -> dict[str, Any]:
        return self._object("POST", f"/prompts/{checkout_request_id}/pin", {"pin": pin or self.pin_code})

    def cancel(self, checkout_request_id: str) -> dict[str, Any]:
        return self._object("POST", f"/prompts/{checkout_request_id}/cancel")

    def ignore(self, checkout_request_id: str) -> dict[str, Any]:
        return self._object("POST", f"/prompts/{checkout_request_id}/ignore")

    def fault(self, count: int = 1, msisdn: str | None = None, **behaviour: Any) -> dict[str, Any]:
        """The next `count` pushes behave so, e.g. fault(callback="never") or fault(push="error")."""
        return self._object("POST", "/faults", {"count": count, "msisdn": msisdn, **behaviour})

    def advance(self, seconds: float) -> None:
        self.control.call("POST", "/clock", {"advanceSeconds": seconds})

    def journal(self, kind: str | None = None) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.control.call("GET", "/journal", params={"kind": kind} if kind else None)
        return entries

    def reset(self) -> None:
        self.control.call("POST", "/reset")

    def _object(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = self.control.call(method, path, body)
        return answer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def start_simulator(**env: str) -> Iterator[RunningSimulator]:
    """A standalone simulator on 127.0.0.1 and a free port, for as long as the `with` lasts."""
    port = _free_port()
    settings = load_simulator_settings({**TEST_DEFAULTS, **env, "PORT": str(port), "HOST": "127.0.0.1"})
    app = create_standalone_app(settings)
    started = threading.Event()
    stop: dict[str, Any] = {}
    failure: list[BaseException] = []

    def serve() -> None:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app, access_log=None)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        except BaseException as exc:  # noqa: BLE001 - reported to the caller's thread
            failure.append(exc)
            started.set()
            return
        stop["loop"] = loop
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="daraja-simulator", daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise failure[0]
    try:
        yield RunningSimulator(
            base_url=f"http://127.0.0.1:{port}", consumer_key=settings.consumer_key,
            consumer_secret=settings.consumer_secret, shortcode=settings.shortcode,
            passkey=settings.passkey, pin_code=settings.pin,
            control=Control(f"http://127.0.0.1:{port}/simulator"))
    finally:
        loop = stop.get("loop")
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
