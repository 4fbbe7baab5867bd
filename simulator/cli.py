"""`python run.py sim …`: the simulator's control API from a terminal.

Talks to a running simulator (beside the gateway, or standalone) over HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import requests

from .scenarios import BEHAVIOUR_FIELDS
from .settings import SimulatorSettings


def default_url() -> str:
    port = os.environ.get("PORT", "").strip() or SimulatorSettings().port
    return os.environ.get("SIMULATOR_URL") or f"http://127.0.0.1:{port}/simulator"


class ControlError(Exception):
    pass


class Control:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None) -> Any:
        try:
            resp = requests.request(method, f"{self.url}/api{path}", json=body, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ControlError(f"cannot reach the simulator at {self.url} ({type(exc).__name__}); "
                               "is it running? (set --url or SIMULATOR_URL)") from None
        if resp.status_code == 204:
            return None
        try:
            data = resp.json()
        except ValueError:
            raise ControlError(f"{method} {path}: HTTP {resp.status_code}, not JSON") from None
        if resp.status_code >= 400:
            raise ControlError(f"{method} {path}: HTTP {resp.status_code}: {data.get('error', data)}")
        return data


def _value(text: str) -> Any:
    """key=value arguments: numbers and null as JSON, anything else as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def print_prompts(prompts: list[dict[str, Any]]) -> None:
    if not prompts:
        print("no prompts")
        return
    print(f"{'CheckoutRequestID':<34} {'phone':<13} {'amount':>8}  {'state':<8} {'result':<12} left")
    for p in prompts:
        result = p["resultCode"] if p["resultCode"] is not None else ""
        left = f"{p['secondsLeft']:.0f}s" if p["state"] == "open" else ""
        print(f"{p['checkoutRequestId']:<34} {p['msisdn']:<13} {p['amount']:>8}  {p['state']:<8} "
              f"{result + (' ' + p['receipt'] if p['receipt'] else ''):<12} {left}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py sim", description="Drive a running Daraja simulator.")
    parser.add_argument("--url", default=default_url(), help="the simulator's /simulator URL (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prompts", help="list prompts, newest first")
    p.add_argument("--state", choices=("open", "settled"))
    p.add_argument("--msisdn")
    p = sub.add_parser("pin", help=f"enter a PIN on a prompt (default {SimulatorSettings().pin})")
    p.add_argument("id")
    p.add_argument("pin", nargs="?", default=SimulatorSettings().pin)
    for name, text in (("wrong-pin", "enter a wrong PIN (2001)"), ("cancel", "cancel the prompt (1032)"),
                       ("ignore", "let the prompt time out now (1037)")):
        sub.add_parser(name, help=text).add_argument("id")
    p = sub.add_parser("trigger", help="put a prompt on a handset without OAuth/STK push")
    p.add_argument("msisdn")
    p.add_argument("amount", type=int)
    p.add_argument("--callback-url", required=True)
    p.add_argument("--reference", default="TEST")
    sub.add_parser("scenarios", help="the catalogue of test numbers")
    sub.add_parser("reset", help="forget all prompts, tokens, customers, faults and the journal")
    p = sub.add_parser("clock", help="show the simulator's time, or move it forward")
    p.add_argument("advance", nargs="?", type=float, help="seconds to move forward, e.g. 60")
    sub.add_parser("expire-tokens", help="expire every OAuth token now")
    p = sub.add_parser("journal", help="requests received and callbacks sent")
    p.add_argument("--kind", choices=("request", "callback"))
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("resend", help="send a callback again, by its journal id")
    p.add_argument("journal_id", type=int)
    p = sub.add_parser("faults", help="list faults, add one for the next pushes, or clear all")
    p.add_argument("settings", nargs="*", metavar="key=value",
                   help=f"behaviour to inject, keys: {', '.join(BEHAVIOUR_FIELDS)}")
    p.add_argument("--count", type=int, default=1, help="how many pushes it applies to")
    p.add_argument("--msisdn", help="only pushes to this number")
    p.add_argument("--subscriber", help="set (or with --clear, clear) this number's standing faults")
    p.add_argument("--clear", action="store_true")
    return parser


def _pin(args: argparse.Namespace, control: Control) -> Any:
    pin = args.pin if args.command == "pin" else "0"  # PINs are 4-6 digits, so "0" is always wrong
    return control.call("POST", f"/prompts/{args.id}/pin", {"pin": pin})


def _trigger(args: argparse.Namespace, control: Control) -> Any:
    return control.call("POST", "/trigger", {"msisdn": args.msisdn, "amount": args.amount,
                                             "callbackUrl": args.callback_url, "accountReference": args.reference})


def _clock(args: argparse.Namespace, control: Control) -> Any:
    if args.advance is None:
        return control.call("GET", "/clock")
    return control.call("POST", "/clock", {"advanceSeconds": args.advance})


def _journal(args: argparse.Namespace, control: Control) -> Any:
    params = {"limit": args.limit, **({"kind": args.kind} if args.kind else {})}
    return control.call("GET", "/journal", params=params)


def _faults(args: argparse.Namespace, control: Control) -> Any:
    behaviour = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise ControlError(f"faults: {item!r} is not key=value")
        behaviour[key] = _value(value)
    if args.subscriber:
        if args.clear:
            return control.call("DELETE", f"/subscribers/{args.subscriber}/faults")
        return control.call("PUT", f"/subscribers/{args.subscriber}/faults", behaviour)
    if args.clear:
        return control.call("DELETE", "/faults")
    if not behaviour:
        return control.call("GET", "/faults")
    return control.call("POST", "/faults", {"count": args.count, "msisdn": args.msisdn, **behaviour})


COMMANDS: dict[str, Callable[[argparse.Namespace, Control], Any]] = {
    "prompts": lambda args, control: control.call(
        "GET", "/prompts", params={k: v for k, v in (("state", args.state), ("msisdn", args.msisdn)) if v}),
    "pin": _pin,
    "wrong-pin": _pin,
    "cancel": lambda args, control: control.call("POST", f"/prompts/{args.id}/cancel"),
    "ignore": lambda args, control: control.call("POST", f"/prompts/{args.id}/ignore"),
    "trigger": _trigger,
    "scenarios": lambda args, control: control.call("GET", "/scenarios"),
    "reset": lambda args, control: control.call("POST", "/reset"),
    "clock": _clock,
    "expire-tokens": lambda args, control: control.call("POST", "/tokens/expire"),
    "journal": _journal,
    "resend": lambda args, control: control.call("POST", f"/callbacks/{args.journal_id}/resend"),
    "faults": _faults,
}


def run(args: argparse.Namespace, control: Control) -> Any:
    command = COMMANDS.get(args.command)
    if command is None:
        raise ControlError(f"unknown command {args.command}")
    return command(args, control)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args, Control(args.url))
    except ControlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.command == "prompts" and not args.json:
        print_prompts(result)
    elif args.command == "clock" and not args.json:
        offset = result["offsetSeconds"]
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(result['now']))} (moved {offset:+.0f} s)")
    elif result is not None:
        print(json.dumps(result, indent=2))
    return 0
