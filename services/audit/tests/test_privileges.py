"""The audit service's own login cannot rewrite the trail: it owns nothing in its schema, may read the trail
and append to it, and moves the head of the chain only through `advance_head()`, forward. A database whose
trail the login owned (before owner roles) is brought to this by running the bootstrap again."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from audit.app import create
from audit.settings import MIGRATIONS
from spm_common.bootstrap import ensure_database, ensure_roles
from spm_common.migrations import SchemaRoles, migrate
from spm_common.settings import SERVICES, with_user
from spm_common.testing.world import World, new_world, running

# What someone holding the audit service's password would try, in the order the trail's history would be
# cut: each must be refused by Postgres itself, not by a trigger the login could switch off.
REWRITES = (
    "UPDATE entries SET payload = '{}'",
    "DELETE FROM entries WHERE seq > 1",
    "TRUNCATE entries",
    "ALTER TABLE entries DISABLE TRIGGER USER",
    "ALTER TABLE entries DISABLE TRIGGER entries_append_only",
    "ALTER TABLE entries ADD COLUMN note text",
    "DROP TABLE entries",
    "DELETE FROM checkpoints",
    "UPDATE checkpoints SET hash = 'x'",
    "UPDATE chain_head SET seq = 1",
    "DELETE FROM chain_head",
    "TRUNCATE chain_head",
    "TRUNCATE checkpoints",
    "INSERT INTO chain_head (seq, hash) VALUES (1, 'x')",
    "ALTER TABLE chain_head DISABLE TRIGGER ALL",
    "ALTER TABLE checkpoints DISABLE TRIGGER USER",
    "ALTER TABLE chain_head OWNER TO CURRENT_USER",
    "ALTER FUNCTION advance_head(bigint, text) OWNER TO CURRENT_USER",
    "ALTER FUNCTION advance_head(bigint, text) RESET search_path",
    "CREATE OR REPLACE FUNCTION advance_head(new_seq bigint, new_hash text) RETURNS void LANGUAGE sql AS $$ SELECT $$",
    "DROP TRIGGER entries_append_only ON entries",
    "ALTER FUNCTION refuse_change() OWNER TO CURRENT_USER",
    "CREATE OR REPLACE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
    "CREATE TABLE entries_copy (seq bigint)",
    "SET ROLE spm_audit_owner",
)


async def as_login(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(with_user(database_url, "spm_audit"), server_settings={"search_path": "audit"})


async def fill(audit: httpx.AsyncClient, kit: Any, admin: asyncpg.Connection, n: int) -> list[Any]:
    events = [kit.event("test.filler", {"n": i}) for i in range(n)]
    await kit.publish(events)
    return await kit.wait_for_entries(admin, [e["id"] for e in events])


async def refused(conn: asyncpg.Connection, statements: tuple[str, ...]) -> dict[str, str]:
    """Each statement's refusal (the error's class name), or 'ALLOWED' where one went through (rolled back)."""
    outcome = {}
    for statement in statements:
        try:
            async with conn.transaction():
                await conn.execute(statement)
                raise _RolledBack
        except asyncpg.InsufficientPrivilegeError as exc:
            outcome[statement] = type(exc).__name__
        except _RolledBack:
            outcome[statement] = "ALLOWED"
    return outcome


class _RolledBack(Exception):
    pass


async def grants_nothing(conn: asyncpg.Connection) -> bool:
    """A GRANT by a role that holds no grant option is not an error in Postgres, only a warning: what it
    must not do is give anything. True when the login's grants left it unable to change the trail."""
    for statement in (
        "GRANT UPDATE, DELETE, TRUNCATE ON entries TO CURRENT_USER",
        "GRANT UPDATE, DELETE, TRUNCATE ON entries, checkpoints, chain_head TO PUBLIC",
        "GRANT spm_audit_owner TO CURRENT_USER",
    ):
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    rights = await conn.fetchval(
        "SELECT bool_or(has_table_privilege(current_user, t, 'UPDATE, DELETE, TRUNCATE'))"
        " FROM unnest(ARRAY['audit.entries', 'audit.checkpoints', 'audit.chain_head']) AS t"
    )
    member = await conn.fetchval("SELECT pg_has_role(current_user, 'spm_audit_owner', 'USAGE')")
    return rights is False and member is False


async def test_the_audit_login_cannot_rewrite_the_trail(
    world: World, audit: httpx.AsyncClient, admin: asyncpg.Connection, kit: Any
) -> None:
    rows = await fill(audit, kit, admin, 3)
    login = await as_login(world.database_url)
    try:
        assert await refused(login, REWRITES) == dict.fromkeys(REWRITES, "InsufficientPrivilegeError")
        assert await grants_nothing(login)
        # The head moves forward only, onto an entry of the trail: not back to cut the tail, not past it.
        seq, hash_ = await login.fetchrow("SELECT seq, hash FROM chain_head")
        first = rows[0]
        back = f"SELECT advance_head({first['seq']}, '{first['hash']}')"
        beyond = f"SELECT advance_head({seq + 5}, '{hash_}')"
        assert await refused(login, (back, beyond)) == {
            back: "InsufficientPrivilegeError",
            beyond: "InsufficientPrivilegeError",
        }
        # The head's two functions run as the owner with a search path of their own, so a temporary table or
        # function of the caller's cannot stand in for the trail.
        settings = await login.fetch(
            "SELECT proname, prosecdef, proconfig FROM pg_proc WHERE pronamespace = 'audit'::regnamespace"
            " AND proname IN ('advance_head', 'lock_head') ORDER BY proname"
        )
        assert [(r["proname"], r["prosecdef"], r["proconfig"]) for r in settings] == [
            ("advance_head", True, ["search_path=audit, pg_temp"]),
            ("lock_head", True, ["search_path=audit, pg_temp"]),
        ]
        # What the service needs still works for it.
        assert await login.fetchval("SELECT count(*) FROM entries") >= 3
    finally:
        await login.close()
    owners = await admin.fetch(
        "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'audit' AND c.relkind = 'r'"
    )
    assert {r["owner"] for r in owners} == {"spm_audit_owner"}
    assert await admin.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'spm_audit_owner'") is False
    verified = await audit.get("/v1/audit/verify", params={"full": "true"}, headers=kit.operator)
    assert verified.json()["ok"] is True
    after = await fill(audit, kit, admin, 2)  # the service appends as before, through advance_head
    assert after[-1]["seq"] == (await admin.fetchval("SELECT seq FROM audit.chain_head"))


@pytest.fixture
async def legacy(tmp_path: Path) -> AsyncIterator[World]:
    """A database as the previous version left it: the audit login created and owns its schema and trail."""
    world = new_world()
    await ensure_database(world.database_url)
    conn = await world.admin()
    try:
        await conn.execute(
            "DO $$ BEGIN CREATE ROLE spm_audit LOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN"
            " NULL; END $$"
        )
        await conn.execute(f'GRANT CONNECT, CREATE ON DATABASE "{world.name}" TO spm_audit')
    finally:
        await conn.close()
    earlier = tmp_path / "migrations"
    earlier.mkdir()
    for path in sorted(MIGRATIONS.glob("000[123]_*.sql")):
        shutil.copy(path, earlier / path.name)
    login = await as_login(world.database_url)
    try:
        await migrate(login, "audit", earlier)
        await login.execute(
            "INSERT INTO entries (seq, event_id, event_type, source, payload, prev_hash, hash)"
            " VALUES (1, 'e1', 'test.old', 'urn:test', '{}', repeat('0', 64), repeat('1', 64))"
        )
        await login.execute("UPDATE chain_head SET seq = 1, hash = repeat('1', 64)")
    finally:
        await login.close()
    yield world
    await world.destroy()


async def test_bootstrap_takes_an_earlier_trail_from_the_login_and_can_run_again(legacy: World, kit: Any) -> None:
    admin = await legacy.admin()
    try:
        owner = "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'audit'"
        assert await admin.fetchval(owner) == "spm_audit"
        for _ in range(2):  # a second run finds everything in place and changes nothing
            await ensure_roles(legacy.database_url, dict.fromkeys(SERVICES))
            await migrate(admin, "audit", MIGRATIONS, SchemaRoles.of("audit"))
        assert await admin.fetchval(owner) == "spm_audit_owner"
        owned = await admin.fetch(
            "SELECT pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'audit'"
        )
        assert {r["owner"] for r in owned} == {"spm_audit_owner"}
        assert await admin.fetchval("SELECT count(*) FROM audit.entries") == 1
    finally:
        await admin.close()
    login = await as_login(legacy.database_url)
    try:
        assert await refused(login, REWRITES) == dict.fromkeys(REWRITES, "InsufficientPrivilegeError")
        assert await grants_nothing(login)
        assert await refused(login, ("CREATE SCHEMA orders",)) == {"CREATE SCHEMA orders": "InsufficientPrivilegeError"}
    finally:
        await login.close()
    # The service carries on appending to the trail it had.
    async with running(create(kit.settings(legacy))):
        event = kit.event("test.after", {"n": 1})
        await type(kit)(legacy).publish([event])
        admin = await legacy.admin()
        try:
            [entry] = await kit.wait_for_entries(admin, [event["id"]])
            assert entry["seq"] == 2 and entry["prev_hash"] == "1" * 64
            assert await admin.fetchval("SELECT seq FROM audit.chain_head") == 2
        finally:
            await admin.close()
