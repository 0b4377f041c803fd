"""Fixtures of the orders service's tests.

Policy: rules (card scrubbing, keys, signatures) are unit-tested without fixtures; everything else runs the
real app (lifespan, consumer, outbox relay, fan-out worker) against the session's own database and
exchange on the real Postgres and RabbitMQ, and where e-mail matters the real notifier against the
in-process SMTP server. Each test uses its own addresses and order ids, so tests do not see each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from orders_helpers import Orders, started
from spm_common.testing.world import World


@pytest.fixture(scope="module")
async def orders(world: World) -> AsyncIterator[Orders]:
    async with started(world) as service:
        yield service
