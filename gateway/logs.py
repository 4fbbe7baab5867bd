"""The process's logs: text or JSON (LOG_FORMAT), each line with the id of the request that wrote
it (gateway/observability.py sets it). Kept apart from the metrics so that run.py can set logging
up before prometheus-client is imported (several workers need its multiprocess mode chosen first)."""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# What a log line may carry besides its message (logger.info(..., extra={...})), in JSON's names.
EXTRA_FIELDS = {"payment_id": "paymentId", "phone": "phone", "outcome": "outcome", "duration_ms": "durationMs"}


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on each record (`-` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "requestId": getattr(record, "request_id", REQUEST_ID.get()),
        }
        for attribute, name in EXTRA_FIELDS.items():
            value = getattr(record, attribute, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class MalformedRequestFilter(logging.Filter):
    """On aiohttp's server logger: a request its HTTP parser refuses (a scanner's garbage, TLS
    spoken to the plain port, a header line over 8,190 bytes) never reaches the app. aiohttp answers
    it with its own 400 and logs it as an ERROR with a traceback, so that anyone could fill the log
    with tracebacks that look like the server failing. It is the client's error: this makes it one
    INFO line with the parser's reason (its words only, never the client's bytes) and no traceback.
    Any other record passes as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError  # not at import: the CLIs start without aiohttp

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            # "Invalid header token:\n\n  b'...'", "Got more than 8190 bytes when reading: b'...'",
            # 'Bad status line "..."': the words before the first colon, quote or line break
            reason = re.split(r"[:'\"\n]", str(exc.message), maxsplit=1)[0].strip()
            reason = "".join(c if c.isprintable() else "?" for c in reason[:80]) or type(exc).__name__
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "malformed HTTP request from %s, answered %d: %s", (remote, exc.code, reason)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """The process's logging: one handler on standard error, text or JSON, with request ids."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiohttp's own logger, and gunicorn's error log, which each worker's aiohttp logs to (--workers N)
    for name in ("aiohttp.server", "gunicorn.error"):
        server = logging.getLogger(name)
        if not any(isinstance(f, MalformedRequestFilter) for f in server.filters):
            server.addFilter(MalformedRequestFilter())
