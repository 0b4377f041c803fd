"""Creates the database and one login role per service: the only step that needs Postgres admin rights.

Each role may connect and create its own schema (its migrations do); it owns that schema and is granted
nothing on any other, so no service can read another's tables (CONTRACT section 2).
"""

from __future__ import annotations

import contextlib

import asyncpg

from spm_common.logging import get_logger
from spm_common.settings import database_name, with_user

log = get_logger(__name__)


# Extensions the services' migrations use; creating one needs rights a service's role does not have.
# unaccent and pg_trgm: the contact inbox's search, insensitive to Vietnamese diacritics, and its index.
EXTENSIONS = ("unaccent", "pg_trgm")


async def ensure_database(admin_url: str) -> None:
    """Create the database (if missing) and, in it, the extensions in EXTENSIONS (in schema public)."""
    name = database_name(admin_url)
    conn = await asyncpg.connect(with_database(admin_url, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{_plain(name)}"')
                log.info("database created", database=name)
            except asyncpg.DuplicateDatabaseError:
                pass
    finally:
        await conn.close()
    conn = await asyncpg.connect(admin_url)
    try:
        for extension in EXTENSIONS:
            # Two bootstraps at once: the other one may create it between the check and the creation.
            with contextlib.suppress(asyncpg.UniqueViolationError):
                await conn.execute(f"CREATE EXTENSION IF NOT EXISTS {_plain(extension)} SCHEMA public")
    finally:
        await conn.close()


async def ensure_roles(admin_url: str, services: dict[str, str | None]) -> None:
    """`services` maps each service to its role's password (None where the server trusts local logins)."""
    name = _plain(database_name(admin_url))
    conn = await asyncpg.connect(admin_url)
    try:
        for service, password in services.items():
            role = _plain(f"spm_{service}")
            # Roles are cluster-wide and two bootstraps may race: creating one twice is not an error.
            await conn.execute(
                f"DO $$ BEGIN CREATE ROLE {role} LOGIN; "
                "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            )
            if password:
                await conn.execute(f"ALTER ROLE {role} PASSWORD {_literal(password)}")
            await conn.execute(f'GRANT CONNECT, CREATE ON DATABASE "{name}" TO {role}')
    finally:
        await conn.close()


def with_database(url: str, database: str) -> str:
    head, _, _ = url.rpartition("/")
    query = url.split("?", 1)[1] if "?" in url else ""
    return f"{head}/{database}" + (f"?{query}" if query else "")


def role_url(admin_url: str, service: str, password: str | None = None) -> str:
    return with_user(admin_url, f"spm_{service}", password)


def _plain(name: str) -> str:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"unexpected database or role name {name!r}")
    return name


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
