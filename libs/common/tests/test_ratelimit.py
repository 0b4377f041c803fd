"""The one rate limiter (`spm_common.ratelimit`) on the real Postgres: fixed windows, counting and looking,
forgetting a bucket whatever its window, sweeping ended windows, buckets that name no one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from spm_common import ratelimit
from spm_common.migrations import SchemaRoles, migrate
from spm_common.ratelimit import Decision, Limit

from .conftest import PROBE_MIGRATIONS

NOW = datetime(2026, 11, 29, 4, 7, 30, tzinfo=UTC).timestamp()


@pytest.fixture
async def conn(lab: Any) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the probe's schema, where the shared migrations made `rate_windows`."""
    admin = await lab.admin()
    try:
        await migrate(admin, "orders", PROBE_MIGRATIONS, SchemaRoles.of("orders"))
        await admin.execute("SET search_path TO orders")
        yield admin
    finally:
        await admin.close()


def name(use: str = "probe") -> str:
    return ratelimit.keyed(use, uuid.uuid4().hex, b"test-key")


def test_a_bucket_is_a_keyed_hash_that_names_no_one() -> None:
    bucket = ratelimit.keyed("c", "203.0.113.7", b"secret-one")
    assert bucket.startswith("c:") and "203.0.113.7" not in bucket
    assert bucket == ratelimit.keyed("c", "203.0.113.7", b"secret-one")
    assert bucket != ratelimit.keyed("c", "203.0.113.7", b"secret-two")
    assert bucket != ratelimit.keyed("c", "203.0.113.8", b"secret-one")
    # One value in two uses has unrelated names, not the same hash under two prefixes.
    assert bucket.split(":")[1] != ratelimit.keyed("login-client", "203.0.113.7", b"secret-one").split(":")[1]


def test_fixed_windows() -> None:
    start, end = Limit(5, 600).window(NOW)
    assert (start, end) == (datetime(2026, 11, 29, 4, 0, tzinfo=UTC), datetime(2026, 11, 29, 4, 10, tzinfo=UTC))
    assert Limit(5, 600).bucket("c:ab") == "c:ab/600"


async def test_hit_refuses_past_the_limit_until_the_window_ends(conn: asyncpg.Connection) -> None:
    bucket, limit = name(), Limit(3, 600)
    decisions = [await ratelimit.hit(conn, bucket, limit, NOW) for _ in range(5)]
    # 150 s from 04:07:30 to 04:10, when the window ends.
    assert decisions == [Decision(True)] * 3 + [Decision(False, 150)] * 2
    assert await ratelimit.hit(conn, bucket, limit, NOW + 150) == Decision(True)  # the next window
    # Another window length is another bucket: a changed limit starts afresh.
    assert await ratelimit.hit(conn, bucket, Limit(3, 60), NOW) == Decision(True)


async def test_counting_failures_and_looking_before_an_attempt(conn: asyncpg.Connection) -> None:
    account, client = name("login-account"), name("login-client")
    counted = [(account, Limit(2, 900)), (client, Limit(5, 900))]
    assert await ratelimit.exhausted(conn, counted, NOW) == Decision(True)
    assert await ratelimit.count(conn, counted, NOW) == [1, 1]
    assert await ratelimit.exhausted(conn, counted, NOW) == Decision(True)
    assert await ratelimit.count(conn, counted, NOW) == [2, 2]
    # The account has used up its two: refused until 04:15, whichever client asks.
    assert await ratelimit.exhausted(conn, counted, NOW) == Decision(False, 450)
    assert await ratelimit.exhausted(conn, [(name("login-client"), Limit(5, 900))], NOW) == Decision(True)

    assert await ratelimit.forget(conn, [account]) == 1
    assert await ratelimit.exhausted(conn, counted, NOW) == Decision(True)
    assert await conn.fetchval("SELECT hits FROM rate_windows WHERE bucket = $1", f"{client}/900") == 2


async def test_forget_drops_every_window_and_sweep_the_ended_ones(conn: asyncpg.Connection) -> None:
    bucket, other = name(), name()
    await ratelimit.hit(conn, bucket, Limit(3, 600), NOW)
    await ratelimit.hit(conn, bucket, Limit(3, 3600), NOW)
    await ratelimit.hit(conn, other, Limit(3, 600), NOW)
    assert await ratelimit.forget(conn, [bucket]) == 2
    assert await conn.fetchval("SELECT count(*) FROM rate_windows WHERE bucket LIKE $1 || '/%'", other) == 1

    # Windows of 2026-11-29 have ended by now (the tests run later); a window running now is kept.
    current = name()
    await ratelimit.hit(conn, current, Limit(3, 3600), datetime.now(UTC).timestamp())
    assert await ratelimit.sweep(conn) >= 1
    assert await conn.fetchval("SELECT count(*) FROM rate_windows WHERE bucket LIKE $1 || '/%'", other) == 0
    assert await conn.fetchval("SELECT count(*) FROM rate_windows WHERE bucket LIKE $1 || '/%'", current) == 1
