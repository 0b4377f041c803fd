"""Four roles, four schemas: each service's role reaches its own schema and nothing of any other's
(CONTRACT section 2), with the real migrations applied as each role."""

from __future__ import annotations

import importlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from spm_common.bootstrap import role_url
from spm_common.migrations import migrate
from spm_common.settings import WITH_SCHEMA
from spm_common.testing.world import World

pytestmark = pytest.mark.asyncio
# Every role with a schema, the console's included: it reads the others only through their APIs.
SERVICES = WITH_SCHEMA


@pytest.fixture(scope="module")
async def as_role(world: World) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    """One connection per service, as its own role, after that service's real migrations ran as that role."""
    connections: dict[str, asyncpg.Connection] = {}
    try:
        for service in SERVICES:
            migrations: Path = importlib.import_module(f"{service}.settings").MIGRATIONS
            conn = await asyncpg.connect(
                role_url(world.database_url, service), server_settings={"search_path": service}
            )
            connections[service] = conn
            await migrate(conn, service, migrations)
        yield connections
    finally:
        for conn in connections.values():
            await conn.close()


async def test_each_service_owns_its_schema_and_tables(world: World, as_role: dict[str, asyncpg.Connection]) -> None:
    admin = await world.admin()
    try:
        for service in SERVICES:
            owner = await admin.fetchval("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", service)
            assert owner == f"spm_{service}"
            tables = await admin.fetch("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = $1", service)
            assert {"outbox", "inbox", "schema_migrations"} <= {t["tablename"] for t in tables}
            assert {t["tableowner"] for t in tables} == {f"spm_{service}"}
            role = await admin.fetchrow(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = $1",
                f"spm_{service}",
            )
            assert not any(role.values()), f"spm_{service} must hold no special power"
            assert (
                await admin.fetchval(
                    "SELECT count(*) FROM pg_auth_members WHERE member = $1::regrole", f"spm_{service}"
                )
                == 0
            ), f"spm_{service} must belong to no other role"
            # Its own tables are reachable through its own connection.
            await as_role[service].fetchval("SELECT count(*) FROM outbox")
    finally:
        await admin.close()


@pytest.mark.parametrize(("reader", "owner"), list(itertools.permutations(SERVICES, 2)))
async def test_no_service_reads_or_writes_another_services_schema(
    world: World, as_role: dict[str, asyncpg.Connection], reader: str, owner: str
) -> None:
    admin = await world.admin()
    try:
        tables = [
            r["tablename"] for r in await admin.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", owner)
        ]
    finally:
        await admin.close()
    conn = as_role[reader]
    for table in tables:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(f'SELECT * FROM "{owner}"."{table}" LIMIT 1')
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(f"INSERT INTO \"{owner}\".outbox (event_id, event_type, body) VALUES ('x', 'x', '')")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(f'CREATE TABLE "{owner}".intruder (id int)')
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(f'CREATE VIEW "{owner}".intruder AS SELECT 1 AS one')
    # A search path naming the other schema does not help either: without USAGE it is skipped.
    async with conn.transaction():
        await conn.execute(f'SET LOCAL search_path TO "{owner}"')
        with pytest.raises(asyncpg.UndefinedTableError):
            await conn.fetch("SELECT * FROM outbox LIMIT 1")
