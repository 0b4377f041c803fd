"""Fixtures of the contact service's tests.

Policy: rules are unit-tested without fixtures; everything else runs the real app (its lifespan, consumer,
outbox relay and background job) against the session's own database and exchange on the real Postgres and
RabbitMQ, and, where e-mail matters, the real notifier against the in-process SMTP server. Each test uses
its own client addresses and e-mail addresses, so tests do not see each other's rate limits or mail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from contact_helpers import Contact, started
from spm_common.testing.world import World


@pytest.fixture(scope="module")
async def contact(world: World) -> AsyncIterator[Contact]:
    async with started(world) as service:
        yield service
