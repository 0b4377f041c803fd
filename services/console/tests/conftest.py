"""Fixtures of the console's tests.

Policy: the console, the contact service and the notifier run as real apps on real ports (uvicorn in this
process), against the session's own database and exchange on the real Postgres and RabbitMQ and the
in-process SMTP server; the browser tests drive Debian's Chromium through Playwright. Each test makes its
own operator accounts and messages, so tests do not see each other's data.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from spm_common.testing.world import World

sys.path.insert(0, str(Path(__file__).parent))

from console_helpers import System, system_running


# One system for the session: starting the three apps costs seconds, and every test makes its own data.
@pytest.fixture(scope="session")
async def system(world: World) -> AsyncIterator[System]:
    async with system_running(world) as running:
        yield running
