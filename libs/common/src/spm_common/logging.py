"""structlog set-up: JSON or console lines, each with the service, event id and correlation id, all redacted."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import orjson
import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars, get_contextvars

from spm_common.redaction import redact_item

__all__ = [
    "bind_contextvars",
    "bound_contextvars",
    "clear_contextvars",
    "configure_logging",
    "get_contextvars",
    "get_logger",
]

# Keys a log line carries as they are: ids, times and names of things, never of people. Everything
# else, the message text included, goes through the redactor.
_SAFE_KEYS = frozenset(
    {
        "level",
        "timestamp",
        "logger",
        "service",
        "event_id",
        "event_type",
        "correlation_id",
        "request_id",
        "method",
        "status",
        "duration_ms",
        "count",
        "attempt",
        "attempts",
        "queue",
        "source",
        "loop",
        "failures",
        "suppressed",
        "delivery_id",
        # Positions and hashes of the audit chain (a hex hash may hold a card-shaped run of digits).
        "seq",
        "hash",
    }
)


def _redact_processor(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if k in _SAFE_KEYS else redact_item(k, v)) for k, v in event_dict.items()}


def _json(value: Any, default: Any = None, **_: Any) -> str:
    # orjson renders a line several times faster than the standard library (one line per request);
    # `default` is structlog's fallback for values JSON has no type for (their repr). What orjson refuses
    # (an integer past 64 bits) is rendered by the standard library: a log call must never fail.
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, default=default)


def configure_logging(service: str, fmt: str = "json", level: str = "info") -> None:
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer(_json)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_processor,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library; render their lines the same way, redacted too.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    bind_contextvars(service=service)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
