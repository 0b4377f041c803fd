"""Runs one service's app in the foreground; uvicorn stops it cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI

from spm_common.logging import configure_logging
from spm_common.settings import ServiceSettings


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    configure_logging(settings.service, settings.log_format, settings.log_level)
    # uvicorn re-raises the stop signal once its graceful shutdown is done, so the process would end "killed
    # by SIGTERM"; a stop that was asked for and completed is a success, so it ends with exit code 0 instead.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _stopped)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
