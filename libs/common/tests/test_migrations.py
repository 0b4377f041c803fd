"""Migrations: applied once and in order, safe when replicas start together, and an applied migration that
was edited afterwards is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from spm_common.migrations import COMMON_MIGRATIONS, MigrationChanged, discover, migrate
from spm_common.testing.world import World

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def schema(lab: World) -> AsyncIterator[str]:
    name = f"mig_{uuid.uuid4().hex[:8]}"
    yield name
    conn = await lab.admin()
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def write(directory: Path, name: str, sql: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(sql, encoding="utf-8")


def logging_migration(version: int, pause: float = 0.0) -> str:
    """A migration that records that it ran (so running twice would show) after an optional pause."""
    create = "CREATE TABLE IF NOT EXISTS ran (n bigserial PRIMARY KEY, version int NOT NULL);" if version == 1 else ""
    return f"{create} SELECT pg_sleep({pause}); INSERT INTO ran (version) VALUES ({version});"


async def test_applied_once_and_in_order(lab: World, schema: str, tmp_path: Path) -> None:
    # Files numbered out of creation order, and a file that is not a migration, which is ignored.
    write(tmp_path, "0010_third.sql", logging_migration(10))
    write(tmp_path, "0001_first.sql", logging_migration(1))
    write(tmp_path, "0002_second.sql", logging_migration(2))
    write(tmp_path, "notes.sql", "this is not SQL and must not run")
    assert [m.version for m in discover(tmp_path, schema)] == [
        f"{schema}:0001_first",
        f"{schema}:0002_second",
        f"{schema}:0010_third",
    ]
    conn = await lab.admin()
    try:
        applied = await migrate(conn, schema, tmp_path)
        assert applied == [
            "common:0001_outbox_inbox",
            "common:0002_outbox_vacuum",
            "common:0003_privacy_answered",
            "common:0004_dead_letters_parked",
            "common:0005_outbox_routing_key",
            "common:0006_rate_windows",
            f"{schema}:0001_first",
            f"{schema}:0002_second",
            f"{schema}:0010_third",
        ]
        assert await migrate(conn, schema, tmp_path) == []
        write(tmp_path, "0011_fourth.sql", logging_migration(11))
        assert await migrate(conn, schema, tmp_path) == [f"{schema}:0011_fourth"]
        ran = await conn.fetch(f'SELECT version FROM "{schema}".ran ORDER BY n')
        assert [r["version"] for r in ran] == [1, 2, 10, 11]
        # The shared tables land in the service's schema, not in public.
        assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.outbox")
        assert await conn.fetchval("SELECT to_regclass('public.outbox') IS NULL")
    finally:
        await conn.close()


async def test_concurrent_migrations_do_not_race(lab: World, schema: str, tmp_path: Path) -> None:
    # Each migration sleeps, so without the advisory lock the two runs would overlap and collide.
    write(tmp_path, "0001_first.sql", logging_migration(1, pause=0.3))
    write(tmp_path, "0002_second.sql", logging_migration(2, pause=0.3))
    connections = [await asyncpg.connect(lab.database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(conn, schema, tmp_path) for conn in connections))
        common = len(discover(COMMON_MIGRATIONS, "common"))
        assert sorted(len(r) for r in results) == [0, 0, common + 2], results
        ran = await connections[0].fetch(f'SELECT version FROM "{schema}".ran ORDER BY n')
        assert [r["version"] for r in ran] == [1, 2]
        # The lock is released afterwards: the next run does not wait.
        async with asyncio.timeout(2):
            assert await migrate(connections[0], schema, tmp_path) == []
    finally:
        for conn in connections:
            await conn.close()


async def test_an_edited_applied_migration_is_refused(lab: World, schema: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_first.sql", logging_migration(1))
    conn = await lab.admin()
    try:
        await migrate(conn, schema, tmp_path)
        write(tmp_path, "0001_first.sql", logging_migration(1) + " -- edited afterwards")
        write(tmp_path, "0002_second.sql", logging_migration(2))
        with pytest.raises(MigrationChanged, match=f"{schema}:0001_first"):
            await migrate(conn, schema, tmp_path)
        # Nothing after the edited one ran, and the lock was released.
        assert [r["version"] for r in await conn.fetch(f'SELECT version FROM "{schema}".ran')] == [1]
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            == 0
        )
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_half_done(lab: World, schema: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_first.sql", logging_migration(1))
    write(tmp_path, "0002_broken.sql", "INSERT INTO ran (version) VALUES (2); SELECT * FROM no_such_table;")
    conn = await lab.admin()
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate(conn, schema, tmp_path)
        assert [r["version"] for r in await conn.fetch(f'SELECT version FROM "{schema}".ran')] == [1]
        versions = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')
        assert f"{schema}:0002_broken" not in {r["version"] for r in versions}
        write(tmp_path, "0002_broken.sql", logging_migration(2))  # fixed before it was ever applied: allowed
        assert await migrate(conn, schema, tmp_path) == [f"{schema}:0002_broken"]
    finally:
        await conn.close()
