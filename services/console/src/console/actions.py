"""Recording what operators see and do: an `operator.action` event through the console's own outbox."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from spm_common import outbox
from spm_common.envelope import new_event

from console.events import OPERATOR_ACTION, OperatorAction


async def record(pool: asyncpg.Pool, source: str, operator: str, action: str, target: str) -> None:
    """Recorded before the page is shown or the action is asked for: a view nobody can account for must not
    happen, so a failure here fails the request."""
    event = new_event(
        OPERATOR_ACTION,
        source,
        OperatorAction(operator=operator, action=action, target=target, at=datetime.now(UTC)),
    )
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, event)
