"""Fixtures of the console's tests.

Policy: the console and the services it calls run as real apps on real ports (uvicorn in this
process), against a database and exchange of their own on the real Postgres and RabbitMQ and the
in-process SMTP server; the browser tests drive Debian's Chromium through Playwright. Each test makes its
own operator accounts and messages, so tests do not see each other's data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from console_helpers import System, system_running
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import new_world


# One system for the session: starting the apps costs seconds, and every test makes its own data. It has a
# world of its own: its apps consume until the session ends, and in the session's world they would take the
# events other services' tests wait for (the audit's, the notifier's).
@pytest.fixture(scope="session")
async def system(smtp: SmtpServer) -> AsyncIterator[System]:
    world = new_world()
    world.smtp_port = smtp.port
    await world.create()
    try:
        async with system_running(world) as running:
            yield running
    finally:
        await world.destroy()
