"""DB_ERRORS, what every retry loop and 503 takes as "the database is away", covers what a real Postgres and
asyncpg raise when the server ends a pooled connection."""

from __future__ import annotations

import asyncio

import asyncpg
from spm_common.db import DB_ERRORS
from spm_common.testing.world import World


async def test_a_pooled_connection_the_server_ended_raises_only_db_errors(lab: World) -> None:
    # Used the moment after its backend is terminated, a pooled connection fails in one of several ways,
    # depending on how much of the server's goodbye asyncpg has read: a ConnectionDoesNotExistError, or
    # (the one the notifier once missed) InternalClientError "cannot switch to state ...". Each is a DB_ERROR.
    pool = await asyncpg.create_pool(lab.database_url, min_size=1, max_size=1)
    admin = await lab.admin()
    seen: list[Exception] = []
    deadline = asyncio.get_running_loop().time() + 15  # a race: here it takes a few tries, a few ms each
    try:
        while not any(isinstance(e, asyncpg.InternalClientError) for e in seen):
            assert asyncio.get_running_loop().time() < deadline, f"no InternalClientError in {len(seen)} tries"
            pid = await pool.fetchval("SELECT pg_backend_pid()")
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            try:
                await pool.fetch("SELECT $1::int", 1)
            except Exception as exc:
                seen.append(exc)
    finally:
        await admin.close()
        await pool.close()
    strays = {type(e).__name__ for e in seen if not isinstance(e, DB_ERRORS)}
    assert not strays, f"not taken as database errors: {sorted(strays)}"
