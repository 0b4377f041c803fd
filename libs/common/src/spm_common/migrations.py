"""Versioned SQL migrations: the shared ones, then the service's own, applied in order, once, under a lock."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from spm_common.db import Connection
from spm_common.logging import get_logger

COMMON_MIGRATIONS = Path(__file__).parent / "sql"
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


async def migrate(conn: Connection, schema: str, service_migrations: Path) -> list[str]:
    """Apply what is new to `schema`; return the versions applied. Safe to run from many replicas at once."""
    migrations = discover(COMMON_MIGRATIONS, "common") + discover(service_migrations, schema)
    quoted = _identifier(schema)
    await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"spm-migrate:{schema}")
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {quoted}.schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await conn.fetch(f"SELECT version, checksum FROM {quoted}.schema_migrations")
        applied = {row["version"]: row["checksum"] for row in rows}
        done: list[str] = []
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationChanged(f"migration {migration.version} was edited after it was applied")
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
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"spm-migrate:{schema}")


def _identifier(name: str) -> str:
    if not name.isidentifier() or not name.islower():
        raise ValueError(f"unexpected schema name {name!r}")
    return f'"{name}"'
