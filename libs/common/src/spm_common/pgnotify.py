"""Waking on Postgres NOTIFY, with polling as the fallback when the notification is missed."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

# Connecting and LISTEN are bounded: a connection that dies half-open must not hold its loop.
TIMEOUT_SECONDS = 10.0


class Listener:
    """A LISTEN connection of its own (outside any pool) that sets an event on each notification."""

    def __init__(self, dsn: str, channel: str) -> None:
        self._dsn = dsn
        self._channel = channel
        self._event = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    def wake(self) -> None:
        self._event.set()

    def notified(self) -> bool:
        """Whether a notification (or a reconnection) came since the last `wait` or `clear`."""
        return self._event.is_set()

    async def notification(self) -> None:
        """Until a notification (or a reconnection) comes, if none came since the last `wait` or `clear`."""
        await self._event.wait()

    def clear(self) -> None:
        """Forget the notifications so far: call before looking at what they announced."""
        self._event.clear()

    async def ensure(self) -> None:
        """(Re)connect if needed; raises while Postgres is away."""
        if self._conn is not None and not self._conn.is_closed():
            return
        conn = await asyncpg.connect(self._dsn, timeout=TIMEOUT_SECONDS, command_timeout=TIMEOUT_SECONDS)
        try:
            await conn.add_listener(self._channel, lambda *_: self._event.set())
            # Losing the connection wakes the waiter too, so it reconnects (and looks) at once.
            conn.add_termination_listener(lambda *_: self._event.set())
        except BaseException:
            conn.terminate()  # not kept: a connection that is not listening would look like a quiet one
            raise
        self._conn = conn
        self._event.set()  # anything committed while we were not listening is due now

    async def wait(self, timeout: float) -> None:
        # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as the event is set,
        # and the loop calling this would run on after its service's stop, which then waits for it forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()
        self._event.clear()

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
            self._conn = None
