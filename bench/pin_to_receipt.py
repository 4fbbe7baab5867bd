"""From the customer pressing OK on the virtual phone to the receipt on the shop's page.

    .venv/bin/python bench/pin_to_receipt.py            # --runs 15

Starts `python run.py` (simulator mode, a fresh SQLite file, the simulator's callback delay set to
0 so that what is measured is the gateway and the pages, not a configured wait) on a free port, and
in Debian's Chromium, for each run: opens the demo pay page, enters a new phone number, presses Pay,
opens that number's virtual phone in a second tab, types the PIN, and times from the click on OK
to the confirmation page showing "Payment received" (the page follows the payment by live updates,
falling back to polling every 3 s). Prints each run, the median and the slowest. Loopback only;
stops by itself (each run has a 20 s limit).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
from bench.pay_page import ARGS, CHROMIUM, ROOT, free_port, wait_listening  # noqa: E402

CALLBACK_DELAY = "0"


async def one_payment(browser: object, base: str, msisdn: str) -> float:
    context = await browser.new_context(base_url=base)  # type: ignore[attr-defined]
    try:
        page = await context.new_page()
        await page.goto("/pay.html")
        await page.fill("#phone", "0" + msisdn[3:])
        await page.click("#pay-button")
        await page.wait_for_selector("#payment-status[data-state=waiting]", timeout=20_000)
        phone = await context.new_page()
        await phone.goto(f"/simulator/phone/{msisdn}")
        await phone.wait_for_selector("#prompt", state="visible", timeout=20_000)
        await phone.fill("#pin", "12345")
        started = time.perf_counter()
        await phone.click("#pin-ok")
        await page.wait_for_selector("#confirmation-completed", state="visible", timeout=20_000)
        return (time.perf_counter() - started) * 1000
    finally:
        await context.close()


async def run(base: str, runs: int) -> list[float]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            await one_payment(browser, base, "254712000999")  # warm-up, not counted
            return [await one_payment(browser, base, f"2547120{i:05d}") for i in range(runs)]
        finally:
            await browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pin-bench-") as work:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MPESA_", "SIMULATOR_", "DATABASE_"))}
        env.update(HOST="127.0.0.1", PORT=str(port), DATABASE_URL=f"sqlite:///{work}/bench.sqlite3",
                   SIMULATOR_CALLBACK_DELAY_SECONDS=CALLBACK_DELAY, SIMULATOR_AUTO_ANSWER_SECONDS="600",
                   PUSH_LIMIT_PER_PHONE="0", PUSH_LIMIT_PER_CLIENT="0", LOOKUP_LIMIT_PER_CLIENT="0")
        log = open(Path(work) / "run.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py")], cwd=work, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_listening(port, proc, time.monotonic() + 30)
            times = asyncio.run(run(f"http://127.0.0.1:{port}", args.runs))
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()
    print(f"OK pressed on the virtual phone -> 'Payment received' on the pay page, {args.runs} payments, "
          f"simulator callback delay {CALLBACK_DELAY} s, {os.cpu_count()} CPUs shared with Chromium")
    print("each (ms): " + ", ".join(f"{t:.0f}" for t in times))
    print(f"median {statistics.median(times):.0f} ms, slowest {max(times):.0f} ms, fastest {min(times):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
