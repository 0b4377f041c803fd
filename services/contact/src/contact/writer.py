"""Group commit for the contact form: attempts arriving together are admitted and stored by two statements.

Each request still waits until its attempt is counted and, where it is within the rate limits, its message
and events are committed, before it answers 202 (or 429), so nothing is acknowledged that is not stored. A
lone attempt is handled at once; while a batch is in flight, the attempts that arrive meanwhile wait for the
next one and go together. Under load this turns many small round trips and transactions (one disk flush
and one outbox wake-up each) into a few larger ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import asyncpg
from spm_common import ratelimit
from spm_common.logging import get_contextvars
from spm_common.ratelimit import Buckets, Decision

from contact import store
from contact.intake import Received, receipt_events

MAX_BATCH = 200


@dataclass
class _Pending:
    message: Received
    counted: Buckets
    # The request's, for the events it causes: the writer's task runs in a context of its own.
    correlation_id: str | None
    done: asyncio.Future[Decision] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MessageWriter:
    def __init__(self, pool: asyncpg.Pool, source: str) -> None:
        self._pool = pool
        self._source = source
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

    async def store(self, message: Received, counted: Buckets) -> Decision:
        """Count the attempt in its buckets and, where it is within the limits, store the message with its
        events; returns once that is committed. Raises if either could not be done."""
        if self._task is None or self._task.done():
            raise RuntimeError("the message writer is not running")
        pending = _Pending(message, counted, get_contextvars().get("correlation_id"))
        self._queue.append(pending)
        self._wake.set()
        return await asyncio.shield(pending.done)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    decisions = await self._write(batch)
                except asyncio.CancelledError:
                    for pending in batch:
                        pending.done.set_exception(RuntimeError("the service is stopping"))
                    raise
                except Exception as exc:
                    for pending in batch:
                        if not pending.done.done():
                            pending.done.set_exception(exc)
                    continue
                for pending, decision in zip(batch, decisions, strict=True):
                    if not pending.done.done():
                        pending.done.set_result(decision)

    async def _write(self, batch: list[_Pending]) -> list[Decision]:
        async with self._pool.acquire() as conn:
            # The counting commits on its own, so the counters' rows are locked only for that statement.
            admissions = await store.admit(conn, [(p.counted, p.message.received_at) for p in batch])
            decisions = []
            admitted = []
            for pending, (client_hits, global_hits, policy_version) in zip(batch, admissions, strict=True):
                message = pending.message
                decision = ratelimit.decide(pending.counted, client_hits, global_hits, message.received_at.timestamp())
                decisions.append(decision)
                if decision.allowed:
                    events = receipt_events(message, policy_version, self._source, pending.correlation_id)
                    admitted.append((message, policy_version, events))
            if admitted:
                await store.insert_messages(conn, admitted)
        return decisions
