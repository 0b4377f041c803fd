"""Group commit for the contact form: messages arriving together are stored by one statement.

Each request still waits until its own message and events are committed before it answers 202, so nothing
is acknowledged that is not stored. A lone message is written at once; while a write is in flight, the
messages that arrive meanwhile wait for the next one and go together. Under load this turns many small
transactions (one disk flush and one outbox wake-up each) into a few larger ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import asyncpg
from spm_common.envelope import CloudEvent
from spm_common.logging import get_logger

from contact import store
from contact.intake import Received

MAX_BATCH = 200
log = get_logger(__name__)


@dataclass
class _Pending:
    message: Received
    policy_version: int | None
    events: list[CloudEvent]
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MessageWriter:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="message-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pending in self._queue:
            if not pending.done.done():
                pending.done.set_exception(RuntimeError("the service is stopping"))

    async def store(self, message: Received, policy_version: int | None, events: list[CloudEvent]) -> None:
        """Returns once the message and its events are committed; raises if they could not be."""
        if self._task is None or self._task.done():
            raise RuntimeError("the message writer is not running")
        pending = _Pending(message, policy_version, events)
        self._queue.append(pending)
        self._wake.set()
        await asyncio.shield(pending.done)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    async with self._pool.acquire() as conn:
                        await store.insert_messages(conn, [(p.message, p.policy_version, p.events) for p in batch])
                except asyncio.CancelledError:
                    for pending in batch:
                        pending.done.set_exception(RuntimeError("the service is stopping"))
                    raise
                except Exception as exc:
                    for pending in batch:
                        if not pending.done.done():
                            pending.done.set_exception(exc)
                    continue
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_result(None)
