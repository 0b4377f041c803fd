"""Versioned SQL migrations: the shared ones, then the service's own, applied in order, once, under a lock.

A service's schema and every object in it belong to its owner role (`spm_<service>_owner`, which cannot log
in); migrations run as that role, by a connection allowed to become it (the database admin: `spm-admin
bootstrap` and `spm-admin migrate`). The service's own login may not become it, so it can only check at
start that nothing is pending (see `bring_up_to_date`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from spm_common.db import Connection
from spm_common.logging import get_logger
from spm_common.settings import ServiceSettings

COMMON_MIGRATIONS = Path(__file__).parent / "sql"
CLOSE_TIMEOUT_SECONDS = 20.0
log = get_logger(__name__)


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path, prefix: str) -> list[Migration]:
    """`NNNN_description.sql` files, in order of their number."""
    files = sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return [Migration(f"{prefix}:{path.stem}", path.read_text(encoding="utf-8")) for path in files]


class MigrationChanged(RuntimeError):
    pass


class MigrationsPending(RuntimeError):
    pass


@dataclass(frozen=True)
class SchemaRoles:
    """Who owns a service's schema (and runs its migrations), and who logs in to use it."""

    owner: str
    login: str

    @classmethod
    def of(cls, service: str) -> SchemaRoles:
        return cls(owner=f"spm_{service}_owner", login=f"spm_{service}")


async def migrate(
    conn: Connection, schema: str, service_migrations: Path, roles: SchemaRoles | None = None
) -> list[str]:
    """Apply what is new to `schema`; return the versions applied. Safe to run from many replicas at once.

    With `roles`, the schema is created for the owner and every migration runs as the owner (`conn` must be
    allowed to become it); the login may read which migrations are applied, not change that record."""
    migrations = discover(COMMON_MIGRATIONS, "common") + discover(service_migrations, schema)
    quoted = _identifier(schema)
    await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"spm-migrate:{schema}")
    try:
        if not await _pending(conn, schema, migrations):
            # Nothing to do, and nothing created: a login that owns nothing gets here too.
            return []
        if roles is None:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        else:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted} AUTHORIZATION {_identifier(roles.owner)}")
            await conn.execute(f"SET ROLE {_identifier(roles.owner)}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {quoted}.schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        if roles is not None:
            await conn.execute(f"REVOKE ALL ON {quoted}.schema_migrations FROM {_identifier(roles.login)}")
            await conn.execute(f"GRANT SELECT ON {quoted}.schema_migrations TO {_identifier(roles.login)}")
        applied = await _applied(conn, schema)
        done: list[str] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path TO {quoted}")
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {quoted}.schema_migrations (version, checksum) VALUES ($1, $2)",
                    migration.version,
                    migration.checksum,
                )
            done.append(migration.version)
            log.info("migration applied", version=migration.version)
        return done
    finally:
        if roles is not None:
            await conn.execute("RESET ROLE")
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"spm-migrate:{schema}")


async def pending(conn: Connection, schema: str, service_migrations: Path) -> list[str]:
    """Versions not yet applied to `schema` (raises MigrationChanged for an applied one edited since)."""
    migrations = discover(COMMON_MIGRATIONS, "common") + discover(service_migrations, schema)
    return [m.version for m in await _pending(conn, schema, migrations)]


async def bring_up_to_date(settings: ServiceSettings, service_migrations: Path) -> list[str]:
    """At a service's start: apply its pending migrations as its schema's owner, through SPM_DATABASE_URL
    (the admin), when the service reaches its database through that URL anyway (development, tests);
    a service given its own SPM_<SERVICE>_DATABASE_URL (compose, production) holds no credential that may
    change its schema, and only checks that `spm-admin bootstrap` (or `migrate`) left nothing pending."""
    schema = settings.db_schema
    if not settings.has_own_database_url():
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await migrate(conn, schema, service_migrations, SchemaRoles.of(settings.service))
        finally:
            await _close(conn)
    conn = await asyncpg.connect(settings.role_database_url())
    try:
        waiting = await pending(conn, schema, service_migrations)
    finally:
        await _close(conn)
    if waiting:
        raise MigrationsPending(
            f"{len(waiting)} migration(s) of {schema} not applied ({', '.join(waiting)}): run "
            f"`spm-admin migrate {settings.service}` (or `spm-admin bootstrap`) with the database admin's "
            "SPM_DATABASE_URL; the service's own login may not change its schema"
        )
    return []


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await conn.close(timeout=CLOSE_TIMEOUT_SECONDS)
    except Exception:  # a connection that stopped answering must not hold the start
        conn.terminate()


async def _applied(conn: Connection, schema: str) -> dict[str, str]:
    if await conn.fetchval("SELECT to_regclass($1)", f"{_identifier(schema)}.schema_migrations") is None:
        return {}
    rows = await conn.fetch(f"SELECT version, checksum FROM {_identifier(schema)}.schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


async def _pending(conn: Connection, schema: str, migrations: list[Migration]) -> list[Migration]:
    applied = await _applied(conn, schema)
    for migration in migrations:
        if migration.version in applied and applied[migration.version] != migration.checksum:
            raise MigrationChanged(f"migration {migration.version} was edited after it was applied")
    return [m for m in migrations if m.version not in applied]


def _identifier(name: str) -> str:
    if not name.isidentifier() or not name.islower():
        raise ValueError(f"unexpected schema name {name!r}")
    return f'"{name}"'
