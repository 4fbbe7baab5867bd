"""The process's logs: text or JSON (LOG_FORMAT), each line with the id of the request that wrote
it (gateway/observability.py sets it). Kept apart from the metrics so that run.py can set logging
up before prometheus-client is imported (several workers need its multiprocess mode chosen first)."""

from __future__ import annotations

import contextvars
import json
import logging
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
