"""Runs one service's app in the foreground; uvicorn stops it cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from spm_common.logging import configure_logging
from spm_common.settings import ServiceSettings


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    configure_logging(settings.service, settings.log_format, settings.log_level)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
