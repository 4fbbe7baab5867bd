"""The pay page as a phone shows it, and what its static files weigh.

    .venv/bin/python bench/pay_page.py

Starts `python run.py` (simulator mode, a fresh SQLite file in a temporary folder) on a free port,
opens /pay.html (the demo catalogue) in Debian's Chromium at 375 x 667, and prints where the Pay
button is (its label, top and bottom in px, whether it is on the first screen), the page's width,
and for each static file the page loaded: its Content-Encoding and Cache-Control as the browser
received them, and its size plain and gzipped. Loopback only; stops by itself (60 s at most).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from playwright.async_api import ViewportSize, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
from bench._common import ROOT, clean_env, free_port, python_of, start_process, stop, wait_up  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SCREEN: ViewportSize = {"width": 375, "height": 667}


def sizes(url: str) -> tuple[int, int]:
    """(plain bytes, gzipped bytes as sent) of one static URL."""
    with requests.Session() as http:
        http.trust_env = False
        plain = len(http.get(url, headers={"Accept-Encoding": "identity"}, timeout=5).content)
        gz = http.get(url, headers={"Accept-Encoding": "gzip"}, stream=True, timeout=5)
        sent = int(gz.headers.get("Content-Length") or len(gz.raw.read()))
        gz.close()
    return plain, sent


async def measure(base: str) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await browser.new_page(viewport=SCREEN)
        responses: list[Any] = []
        page.on("response", lambda r: responses.append(r) if "/static/" in r.url else None)
        await page.goto(f"{base}/pay.html")
        await page.wait_for_selector("#order-items li")
        box = await page.locator("#pay-button").bounding_box()
        assert box is not None, "no Pay button"
        label = (await page.inner_text("#pay-button")).strip()
        bottom = box["y"] + box["height"]
        print(f"Pay button at {SCREEN['width']} x {SCREEN['height']}: {label!r}, top {box['y']:.0f} px, "
              f"bottom {bottom:.0f} px ({'on' if bottom <= SCREEN['height'] else 'below'} the first screen)")
        print(f"page width: {await page.evaluate('document.documentElement.scrollWidth')} px")
        total_plain = total_gz = 0
        for response in responses:
            headers = await response.all_headers()
            plain, gz = sizes(response.url)
            total_plain, total_gz = total_plain + plain, total_gz + gz
            name = response.url.split("/static/", 1)[1].split("?", 1)[0]
            print(f"  {name:24} {headers.get('content-encoding', '-'):5} {headers.get('cache-control', '-'):40} "
                  f"{plain:7,} B plain {gz:7,} B gzip")
        print(f"static files: {total_plain:,} B plain, {total_gz:,} B gzip")
        await browser.close()


def main() -> int:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = clean_env(PORT=str(port), HOST="127.0.0.1", MPESA_ENV="simulator",
                        DATABASE_URL=f"sqlite:///{tmp}/bench.sqlite3")
        proc = start_process([python_of(ROOT), str(ROOT / "run.py")], Path(tmp), env, Path(tmp) / "run.log")
        try:
            deadline = time.monotonic() + 60
            wait_up(f"http://127.0.0.1:{port}/health", proc, timeout=30)
            asyncio.run(asyncio.wait_for(measure(f"http://127.0.0.1:{port}"), deadline - time.monotonic()))
        finally:
            stop([proc])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
