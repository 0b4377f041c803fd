"""Capturing the log lines a service would print, rendered exactly as `configure_logging` renders them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import structlog

from spm_common.logging import clear_contextvars, configure_logging


@dataclass
class CapturedLogs:
    buffer: io.StringIO

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


@contextmanager
def captured_json_logs(service: str, level: str = "info") -> Iterator[CapturedLogs]:
    """JSON logging as a service configures it, into a buffer instead of stdout; undone afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_config = structlog.get_config()
    configure_logging(service, "json", level)
    buffer = io.StringIO()
    # The same processors and renderer; only the stream changes (stdout may belong to pytest's capture).
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(buffer))
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(buffer)
    try:
        yield CapturedLogs(buffer)
    finally:
        structlog.configure(**saved_config)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        clear_contextvars()
