"""Fixtures of the HTTP edge tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import World, new_world


@pytest.fixture
async def own_world(smtp: SmtpServer) -> AsyncIterator[World]:
    """A world for one test that stores things (a fuzzing run sends thousands of requests): what it stores and
    publishes (messages, orders, the events the audit would consume later) stays out of the session's world,
    where other tests count rows."""
    world = new_world()
    world.smtp_port = smtp.port
    await world.create()
    try:
        yield world
    finally:
        await world.destroy()
