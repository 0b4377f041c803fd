"""pytest fixtures for every test of the repository (loaded with `-p spm_common.testing.plugin`).

Policy: unit tests use no fixture here; integration and end-to-end tests use `world` (a database and an
exchange of their own on the real Postgres and RabbitMQ, destroyed afterwards) and `smtp` (a real SMTP
server in the test process). Nothing is mocked that a test claims to prove.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import World, new_world


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def world(smtp: SmtpServer) -> AsyncIterator[World]:
    instance = new_world()
    instance.smtp_port = smtp.port
    await instance.create()
    yield instance
    await instance.destroy()


@pytest.fixture(autouse=True)
def _reset_smtp_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "smtp" in request.fixturenames:
        server: SmtpServer = request.getfixturevalue("smtp")
        server.reply_for_rcpt = server.reply_for_data = None
        server.stall_seconds = server.stall_rcpt_seconds = 0.0
        server.come_back()
