"""From the customer pressing OK on the virtual phone to the receipt on the shop's page, by stage.

    .venv/bin/python bench/pin_to_receipt.py                            # --runs 15
    .venv/bin/python bench/pin_to_receipt.py --also /path/to/another/checkout   # both, alternating
    .venv/bin/python bench/pin_to_receipt.py --without-phone-frame      # the pay page as in production

Starts `python run.py` (simulator mode, a fresh SQLite file, JSON logs) on a free port, with the
simulator's callback delay set to 0: the only configured delay on this path (the simulator's
other timings do not apply to a prompt answered by hand), so nothing is subtracted from the
figures and they are what the code costs. With `--also DIR`, the same for DIR/run.py (with
DIR/.venv/bin/python if there is one), and the payments alternate between the two.

In Debian's Chromium, for each run: opens the demo pay page, enters a new phone number, presses
Pay, opens that number's virtual phone in a second tab, types the PIN, presses OK, and waits for
"Payment received" (#confirmation-completed) on the pay page's tab. The clock starts when the
phone page receives the press on OK (its click event), once the prompt's entry animation is over
(Playwright's click waits for a still element: timing from the click call would count the 0.2 s
animation and Playwright's own dispatch). The pay page's tab is brought to the front first: it is
the page the customer watches (the phone is another device), and a tab behind another gets its
animation frames late (up to 1 s in headless Chromium), which would time the tab, not the page.
The stages are marked in the pages by a script the bench adds (Date.now(), one clock for every
tab and for the server's log):
  OK -> PIN sent          the phone page's handler sends POST …/prompts/{id}/pin
  PIN sent -> recorded    the simulator answers, schedules and POSTs the callback, the gateway
                          applies it (its log line "callback … applied", written after the commit)
  recorded -> heard       the gateway's live event reaches the pay page (EventSource "status")
  heard -> requested      the pay page asks for the receipt page (/confirmation.html): navigates
                          to it, or fetches it to show it in place
  requested -> received   the server renders it from the store
  received -> in the DOM  "Payment received" is in the pay page's tab's document
  in the DOM -> frame     the next animation frame (the receipt is painted in it)
and, aside: PIN sent -> the phone's answer (what the phone page waits for; runs alongside).
Prints each run, the per-stage medians, OK -> frame (the figure), and Playwright's own view
(click call -> wait_for_selector returned, which adds its dispatch and polling). Loopback only;
stops by itself (each run has a 20 s limit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
from bench._common import clean_env, free_port, python_of, start_process, stop, wait_up  # noqa: E402
from bench.pay_page import ARGS, CHROMIUM, ROOT  # noqa: E402

CALLBACK_DELAY = "0"  # SIMULATOR_CALLBACK_DELAY_SECONDS: the configured delay on this path, subtracted below
CONFIGURED_DELAY_MS = float(CALLBACK_DELAY) * 1000

# Added to every page of the run's browser context (top windows only: the pay page embeds the
# phone in a frame). Marks live in sessionStorage, so a navigation from the pay page keeps them.
MARKS = """
(() => {
  if (window !== window.top) return;
  const KEY = "bench.marks";
  const mark = (name) => {
    try {
      const marks = JSON.parse(sessionStorage.getItem(KEY) || "{}");
      if (!(name in marks)) {
        marks[name] = Date.now();
        sessionStorage.setItem(KEY, JSON.stringify(marks));
      }
    } catch {}
  };
  document.addEventListener("click", (event) => {
    if (event.target.closest && event.target.closest("#pin-ok")) mark("ok");
  }, true);
  const nativeFetch = window.fetch;
  window.fetch = function (input, ...rest) {
    const pin = /\\/prompts\\/[^/]+\\/pin$/.test(String(input && input.url || input));
    if (pin) mark("pinSent");
    const answer = nativeFetch.call(this, input, ...rest);
    if (pin) answer.then(() => mark("pinAnswered"), () => {});
    return answer;
  };
  const NativeEventSource = window.EventSource;
  if (NativeEventSource) {
    window.EventSource = class extends NativeEventSource {
      constructor(...args) {
        super(...args);
        this.addEventListener("status", (event) => {
          try {
            if (JSON.parse(event.data).status === "completed") mark("heard");
          } catch {}
        });
      }
    };
  }
  const shown = () => {
    if (!document.getElementById("confirmation-completed")) return false;
    mark("inDom");
    requestAnimationFrame(() => mark("frame"));
    return true;
  };
  new MutationObserver((_, observer) => { if (shown()) observer.disconnect(); })
    .observe(document, { childList: true, subtree: true });
})();
"""

# The receipt page's request as the pay page's tab saw it: a navigation (its document's timing) or a
# fetch from the pay page (a resource). Times since the epoch, as the marks.
RECEIPT_PAGE_TIMING = """() => {
  const navigation = performance.getEntriesByType("navigation")[0];
  const navigated = navigation.name.includes("/confirmation.html");
  const entry = navigated ? navigation
    : performance.getEntriesByType("resource").find((e) => e.name.includes("/confirmation.html"));
  const at = (t) => performance.timeOrigin + t;
  return { navigated, asked: entry ? at(entry.startTime) : null, received: entry ? at(entry.responseEnd) : null };
}"""

# (label, from mark, to mark); "recorded" comes from the gateway's log.
STAGES = [
    ("OK -> PIN sent (phone page)", "ok", "pinSent"),
    ("PIN sent -> gateway recorded it paid", "pinSent", "recorded"),
    ("recorded -> pay page heard it (live event)", "recorded", "heard"),
    ("heard -> receipt page requested", "heard", "asked"),
    ("requested -> its HTML received", "asked", "received"),
    ("received -> receipt in the DOM", "received", "inDom"),
    ("in the DOM -> next frame", "inDom", "frame"),
]
ASIDE = ("aside: PIN sent -> the phone's own answer", "pinSent", "pinAnswered")
TOTAL = ("OK -> receipt painted (frame)", "ok", "frame")
APPLIED = re.compile(r"^callback (ws_CO_\w+): applied$")


@dataclass
class Checkout:
    name: str
    root: Path
    base: str = ""
    log: Path | None = None
    runs: list[dict[str, float]] = field(default_factory=list)


def start(checkout: Checkout, work: Path) -> subprocess.Popen[bytes]:
    port = free_port()
    env = clean_env(HOST="127.0.0.1", PORT=str(port), DATABASE_URL=f"sqlite:///{work}/{checkout.name}.sqlite3",
                    SIMULATOR_CALLBACK_DELAY_SECONDS=CALLBACK_DELAY, SIMULATOR_AUTO_ANSWER_SECONDS="600",
                    PUSH_LIMIT_PER_PHONE="0", PUSH_LIMIT_PER_CLIENT="0", LOOKUP_LIMIT_PER_CLIENT="0",
                    LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    checkout.log = work / f"{checkout.name}.log"
    checkout.base = f"http://127.0.0.1:{port}"
    proc = start_process([python_of(checkout.root), str(checkout.root / "run.py")], work, env, checkout.log)
    wait_up(f"{checkout.base}/health", proc)
    return proc


async def one_payment(browser: Any, base: str, msisdn: str, without_frame: bool = False) -> dict[str, Any]:
    context = await browser.new_context(base_url=base)
    try:
        await context.add_init_script(MARKS)
        page = await context.new_page()
        await page.goto("/pay.html")
        await page.fill("#phone", "0" + msisdn[3:])
        await page.click("#pay-button")
        await page.wait_for_selector("#payment-status[data-state=waiting]", timeout=20_000)
        if without_frame:  # as in sandbox and production, where the pay page embeds no phone
            await page.evaluate("document.getElementById('phone-frame')?.remove()")
        phone = await context.new_page()
        await phone.goto(f"/simulator/phone/{msisdn}")
        await phone.wait_for_selector("#prompt", state="visible", timeout=20_000)
        await phone.fill("#pin", "12345")
        await phone.locator("#pin-ok").click(trial=True)  # the prompt's entry animation is over
        await page.bring_to_front()  # the shop's page is the one watched (the phone is another device)
        started = time.perf_counter()
        await phone.click("#pin-ok")
        await page.wait_for_selector("#confirmation-completed", state="visible", timeout=20_000)
        seen = (time.perf_counter() - started) * 1000
        await page.wait_for_function("() => 'frame' in JSON.parse(sessionStorage.getItem('bench.marks') || '{}')",
                                     timeout=5_000)
        marks: dict[str, Any] = {
            **json.loads(await phone.evaluate("sessionStorage.getItem('bench.marks') || '{}'")),
            **json.loads(await page.evaluate("sessionStorage.getItem('bench.marks') || '{}'")),
        }
        checkout_request_id = re.search(r"checkoutRequestId=(ws_CO_\w+)", page.url)
        marks["checkoutRequestId"] = checkout_request_id.group(1) if checkout_request_id else ""
        marks["playwright"] = seen
        page_timing = await page.evaluate(RECEIPT_PAGE_TIMING)
        marks["navigated"] = page_timing["navigated"]
        if page_timing["asked"] is not None:
            marks["asked"], marks["received"] = page_timing["asked"], page_timing["received"]
        return marks
    finally:
        await context.close()


def recorded_times(log: Path) -> dict[str, float]:
    """checkoutRequestId -> when the gateway logged its callback applied (ms since the epoch)."""
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        match = APPLIED.match(str(entry.get("message", "")))
        if match:
            when = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
            found[match.group(1)] = when.timestamp() * 1000
    return found


async def measure(checkouts: list[Checkout], runs: int, without_frame: bool) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for checkout in checkouts:
                await one_payment(browser, checkout.base, "254712000999")  # warm-up, not counted
            for i in range(runs):
                order = checkouts if i % 2 == 0 else checkouts[::-1]
                for checkout in order:
                    checkout.runs.append(await one_payment(browser, checkout.base, f"2547120{i:05d}", without_frame))
        finally:
            await browser.close()


def stage(run: dict[str, Any], start_mark: str, end_mark: str) -> float | None:
    if start_mark in run and end_mark in run:
        return float(run[end_mark] - run[start_mark])
    return None


def median_of(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):6.0f} ms" if known else "     n/a"


def report(checkout: Checkout) -> float:
    assert checkout.log is not None
    recorded = recorded_times(checkout.log)
    for run in checkout.runs:
        if run["checkoutRequestId"] in recorded:
            run["recorded"] = recorded[run["checkoutRequestId"]]
    totals = [stage(r, *TOTAL[1:]) for r in checkout.runs]
    known = [t for t in totals if t is not None]
    shown = "in place" if not any(r["navigated"] for r in checkout.runs) else \
        "after a navigation" if all(r["navigated"] for r in checkout.runs) else "mixed"
    print(f"\n{checkout.name} ({checkout.root}): {len(checkout.runs)} payments, receipt shown {shown}")
    print("  OK -> painted, each (ms): " + ", ".join("n/a" if t is None else f"{t:.0f}" for t in totals))
    for label, start_mark, end_mark in [*STAGES, ASIDE]:
        print(f"  {label:46s} median {median_of([stage(r, start_mark, end_mark) for r in checkout.runs])}")
    figure = statistics.median(known) - CONFIGURED_DELAY_MS
    print(f"  {TOTAL[0]:46s} median {statistics.median(known):6.0f} ms (fastest {min(known):.0f}, "
          f"slowest {max(known):.0f})")
    print(f"  minus configured delays ({CONFIGURED_DELAY_MS:.0f} ms)               median {figure:6.0f} ms")
    print(f"  {'Playwright: click call -> selector seen':46s} median "
          f"{median_of([r['playwright'] for r in checkout.runs])}")
    return figure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--also", type=Path, help="another checkout to measure in the same run, alternating")
    parser.add_argument("--without-phone-frame", action="store_true",
                        help="remove the virtual phone the pay page embeds in simulator mode before OK "
                             "(the pay page as in sandbox and production; its handset reacts to the PIN "
                             "on the pay page's own main thread)")
    args = parser.parse_args()
    checkouts = [Checkout("this", ROOT)]
    if args.also:
        checkouts.append(Checkout("also", args.also.resolve()))
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="pin-bench-") as work:
        try:
            for checkout in checkouts:
                procs.append(start(checkout, Path(work)))
            asyncio.run(measure(checkouts, args.runs, args.without_phone_frame))
        finally:
            stop(procs)
        print(f"OK pressed on the virtual phone -> 'Payment received' on the pay page, Chromium, "
              f"{os.cpu_count()} CPUs shared with the browser; configured delays: simulator callback delay "
              f"{CALLBACK_DELAY} s (SIMULATOR_CALLBACK_DELAY_SECONDS), subtracted; no other configured or "
              f"fixed wait is on this path; the pay page's embedded virtual phone "
              f"{'removed before OK' if args.without_phone_frame else 'kept (simulator mode)'}")
        figures = [report(checkout) for checkout in checkouts]
    if len(figures) == 2:
        print(f"\nthis / also (OK -> painted, medians): {figures[0] / figures[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
