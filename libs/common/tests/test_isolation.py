"""Four logins, four schemas: each service's login reaches its own schema's data and nothing of any other's
(CONTRACT section 2), owns nothing, and cannot create a schema; the real migrations ran as each schema's
owner role."""

from __future__ import annotations

import importlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from spm_common.bootstrap import role_url
from spm_common.migrations import SchemaRoles, migrate
from spm_common.settings import WITH_SCHEMA
from spm_common.testing.world import World

pytestmark = pytest.mark.asyncio
# Every role with a schema, the console's included: it reads the others only through their APIs.
SERVICES = WITH_SCHEMA


@pytest.fixture(scope="module")
async def as_role(world: World) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    """One connection per service, as its login, after that service's real migrations ran as its owner."""
    connections: dict[str, asyncpg.Connection] = {}
    admin = await world.admin()
    try:
        for service in SERVICES:
            migrations: Path = importlib.import_module(f"{service}.settings").MIGRATIONS
            await migrate(admin, service, migrations, SchemaRoles.of(service))
            conn = await asyncpg.connect(
                role_url(world.database_url, service), server_settings={"search_path": service}
            )
            connections[service] = conn
        yield connections
    finally:
        await admin.close()
        for conn in connections.values():
            await conn.close()


async def test_each_schema_belongs_to_its_owner_role_not_to_the_login(
    world: World, as_role: dict[str, asyncpg.Connection]
) -> None:
    admin = await world.admin()
    try:
        for service in SERVICES:
            owner = await admin.fetchval("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", service)
            assert owner == f"spm_{service}_owner"
            tables = await admin.fetch("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = $1", service)
            assert {"outbox", "inbox", "schema_migrations"} <= {t["tablename"] for t in tables}
            assert {t["tableowner"] for t in tables} == {f"spm_{service}_owner"}
            for role_name, can_login in ((f"spm_{service}", True), (f"spm_{service}_owner", False)):
                role = await admin.fetchrow(
                    "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin FROM pg_roles"
                    " WHERE rolname = $1",
                    role_name,
                )
                assert role is not None, role_name
                assert role["rolcanlogin"] is can_login, role_name
                assert not any(role[k] for k in ("rolsuper", "rolcreaterole", "rolcreatedb", "rolbypassrls")), (
                    f"{role_name} must hold no special power"
                )
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


class Undo(Exception):
    pass


@pytest.mark.parametrize("service", SERVICES)
async def test_a_login_uses_its_tables_as_data_and_cannot_change_them(
    as_role: dict[str, asyncpg.Connection], service: str
) -> None:
    conn = as_role[service]
    with pytest.raises(Undo):
        async with conn.transaction():  # its data: yes (and undone)
            await conn.execute("INSERT INTO inbox (source, event_id, event_type) VALUES ('urn:test', 'x', 'test')")
            await conn.execute("UPDATE inbox SET event_type = 'test.2' WHERE event_id = 'x'")
            assert await conn.execute("DELETE FROM inbox WHERE event_id = 'x'") == "DELETE 1"
            raise Undo
    for statement in (
        "ALTER TABLE inbox ADD COLUMN note text",
        "ALTER TABLE outbox DISABLE TRIGGER ALL",
        "DROP TABLE outbox",
        "TRUNCATE inbox",
        "CREATE TABLE extra (id int)",
        f"ALTER SCHEMA {service} OWNER TO CURRENT_USER",
        "INSERT INTO schema_migrations (version, checksum) VALUES ('x', 'x')",
        "UPDATE schema_migrations SET checksum = 'x'",
        "DELETE FROM schema_migrations",
        "ALTER TABLE inbox OWNER TO CURRENT_USER",
        "ALTER TABLE inbox DISABLE TRIGGER USER",
        "CREATE TRIGGER t BEFORE INSERT ON inbox FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        "CREATE INDEX extra ON inbox (event_type)",
        f"GRANT spm_{service}_owner TO CURRENT_USER",
        f"SET ROLE spm_{service}_owner",
        # No login may create a schema: none can take another service's name before its bootstrap.
        "CREATE SCHEMA squatter",
        f"CREATE SCHEMA {service}_2",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute(statement)
    # A GRANT without grant options is only a warning in Postgres; it must give nothing.
    await conn.execute("GRANT TRUNCATE ON inbox TO PUBLIC")
    assert await conn.fetchval(f"SELECT has_table_privilege('{service}.inbox', 'TRUNCATE')") is False
    assert await conn.fetchval("SELECT has_database_privilege(current_database(), 'CREATE')") is False
    assert await conn.fetchval("SELECT has_schema_privilege('public', 'CREATE')") is False
