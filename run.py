"""Entry point.

    python run.py                      the gateway, the pages and (in simulator mode) the simulator
    python run.py simulator --port N   the Daraja simulator alone, Daraja's paths at its root
    python run.py sim COMMAND …        drive a running simulator (prompts, pin, cancel, faults, clock …)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from urllib.parse import urlsplit

from aiohttp import web
from dotenv import load_dotenv

from gateway.config import ConfigError, Settings, load_settings


KEEPALIVE_SECONDS = 15.0


def masked_url(url: str) -> str:
    """The scheme and host only: the callback's path is its secret, so it is never printed."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/… (path hidden)"


def banner(settings: Settings) -> str:
    lines = [
        f"{settings.business_name} M-Pesa Server Running",
        f"Server: {settings.server_url}",
        f"Frontend: {settings.frontend_url}",
        f"M-Pesa Business Code: {settings.shortcode}",
        f"Mode: {settings.mpesa_env} ({settings.app_env})",
        f"Daraja: {settings.base_url}",
        f"Callback: {masked_url(settings.callback_url)}",
        f"Database: {settings.database_url}",
    ]
    lines.append(f"Pay page: {settings.server_url}/pay.html")
    if settings.simulator_mounted:
        lines.append(f"Simulator: {settings.server_url}/simulator (virtual phone: /simulator/phone, "
                     f"PIN {settings.simulator.pin})")
    return "\n".join(lines)


def build_app(settings: Settings) -> web.Application:
    """The three parts, composed: the gateway, its pages, and in simulator mode the simulator
    (Daraja's paths under /daraja, its pages and control API under /simulator)."""
    from gateway.app import add_callback_route, create_app
    from web.routes import setup_web

    app = create_app(settings)
    setup_web(app)
    if settings.simulator_mounted:
        from simulator.app import mount_simulator
        mount_simulator(app, settings)
    add_callback_route(app)  # last: it must not collide with any route above
    return app


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sim"]:
        load_dotenv()
        from simulator.cli import main as sim_main
        return sim_main(argv[1:])
    parser = argparse.ArgumentParser(prog="run.py", description="M-Pesa payment server and Daraja simulator")
    parser.add_argument("command", nargs="?", default="serve", choices=("serve", "simulator", "sim"),
                        help="serve (default), simulator (standalone), or sim … (see `run.py sim --help`)")
    parser.add_argument("--port", type=int, help="override PORT")
    parser.add_argument("--host", help="override HOST")
    args = parser.parse_args(argv)

    load_dotenv()  # real environment variables win over .env
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        env = dict(os.environ)  # command-line options win over the environment and .env
        if args.port is not None:
            env["PORT"] = str(args.port)
        if args.host is not None:
            env["HOST"] = args.host
        settings = load_settings(env)
        if args.command == "simulator":
            from simulator.app import create_standalone_app
            app = create_standalone_app(settings)
            print(f"Daraja simulator running at http://{settings.public_host}:{settings.port} "
                  f"(consumer key {settings.consumer_key}, shortcode {settings.shortcode})", flush=True)
        else:
            app = build_app(settings)
            print(banner(settings), flush=True)
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    # A connection that has not finished a request within KEEPALIVE_SECONDS is closed (aiohttp
    # starts this timer when a connection opens: slow headers are cut too). A body that never
    # finishes is not: the reverse proxy in deploy/ cuts those.
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                keepalive_timeout=KEEPALIVE_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
