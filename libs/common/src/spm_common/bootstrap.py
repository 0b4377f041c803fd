"""Creates the database, and per service an owner role, a login role and the schema: the only step that
needs Postgres admin rights. Declares each service's queues, exchanges and bindings on RabbitMQ
(`ensure_topology`), the only step that needs the right to configure the broker.

`spm_<service>_owner` cannot log in; it owns the schema `<service>` and everything in it, and migrations run
as it (`spm_common.migrations`). `spm_<service>` is the service's login: it may use its own schema's tables
(select, insert, update, delete; the audit service's migrations narrow that to appending to its trail), but
owns nothing, so it can neither alter, drop, disable a trigger nor grant; it is granted nothing on any other
schema (CONTRACT section 2), and no login may create a schema, so none can take another service's name first.
"""

from __future__ import annotations

import contextlib
from urllib.parse import quote

import asyncpg
import httpx
from faststream.rabbit import RabbitBroker

from spm_common.brokerusers import management_api, vhost_of
from spm_common.logging import get_logger
from spm_common.migrations import SchemaRoles
from spm_common.settings import database_name, with_user
from spm_common.topology import Topology

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
    """`services` maps each service to its login's password (None where the server trusts local logins).

    Safe to run again, and it brings a database of an earlier version (whose logins owned their schemas) to
    this arrangement: the schema and its objects pass to the owner role, the login keeps its data rights."""
    name = _plain(database_name(admin_url))
    conn = await asyncpg.connect(admin_url)
    try:
        superuser = await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        # Only the admin creates schemas (Postgres 15 already keeps PUBLIC out of `public`; older ones do not).
        await conn.execute(f'REVOKE CREATE ON DATABASE "{name}" FROM PUBLIC')
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        for service, password in services.items():
            roles = SchemaRoles.of(service)
            owner, login = _plain(roles.owner), _plain(roles.login)
            await _create_role(conn, owner, "NOLOGIN")
            await _create_role(conn, login, "LOGIN")
            # Only when needed: two bootstraps altering the same (cluster-wide) role at once is an error in Postgres.
            if await conn.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", owner):
                await conn.execute(f"ALTER ROLE {owner} NOLOGIN")
            if password:
                await conn.execute(f"ALTER ROLE {login} PASSWORD {_literal(password)}")
            if not superuser:
                # An admin that is not a superuser may become the owner (to migrate) only as its member.
                await conn.execute(f"GRANT {owner} TO CURRENT_USER")
            await conn.execute(f'GRANT CONNECT ON DATABASE "{name}" TO {login}')
            # An earlier bootstrap let each login create its own schema.
            await conn.execute(f'REVOKE CREATE ON DATABASE "{name}" FROM {login}')
            await conn.execute(f"REVOKE CREATE ON SCHEMA public FROM {login}")
            await _own_schema(conn, service, owner, login)
    finally:
        await conn.close()


async def _create_role(conn: asyncpg.Connection, role: str, login: str) -> None:
    # Roles are cluster-wide and two bootstraps may race: creating one twice is not an error.
    await conn.execute(
        f"DO $$ BEGIN CREATE ROLE {role} {login}; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    )


async def _own_schema(conn: asyncpg.Connection, schema: str, owner: str, login: str) -> None:
    schema = _plain(schema)
    current = await conn.fetchval("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", schema)
    if current is None:
        await conn.execute(
            f"DO $$ BEGIN CREATE SCHEMA {schema} AUTHORIZATION {owner}; "
            "EXCEPTION WHEN duplicate_schema OR unique_violation THEN NULL; END $$"
        )
    elif current != owner:
        # Made by an earlier version, as the login. Its objects pass to the owner with the login's own rights
        # on them, so the login is then given its data rights back; the service's migrations narrow them.
        async with conn.transaction():
            await conn.execute(f"ALTER SCHEMA {schema} OWNER TO {owner}")
            if current == login:
                await conn.execute(f"REASSIGN OWNED BY {login} TO {owner}")
            await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {login}")
            await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {login}")
            if await conn.fetchval("SELECT to_regclass($1)", f"{schema}.schema_migrations") is not None:
                await conn.execute(f"REVOKE INSERT, UPDATE, DELETE ON {schema}.schema_migrations FROM {login}")
        log.info("schema passed to its owner role", schema=schema, owner=owner)
    await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {login}")
    # What the owner creates from now on (every migration), the login may use as data, nothing more.
    await conn.execute(
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema}"
        f" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {login}"
    )
    await conn.execute(
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {login}"
    )


async def ensure_topology(amqp_url: str, exchange: str, bindings: dict[str, tuple[str, ...]]) -> None:
    """Declare each service's topology (`Topology.declare`), its queue bound to its routing keys in `bindings`,
    with a login allowed to configure the broker: a service's own broker user may not, and finds it made."""
    broker = RabbitBroker(amqp_url, logger=None)
    await broker.connect()
    try:
        for service, keys in bindings.items():
            await Topology(exchange, service).declare(broker, keys)
    finally:
        await broker.stop()


async def remove_stale_bindings(
    management_url: str, amqp_url: str, exchange: str, bindings: dict[str, tuple[str, ...]]
) -> list[str]:
    """Unbind from `exchange` every routing key a service's queue is bound to but no longer takes (an upgrade
    narrowed what it consumes): the queue would otherwise go on receiving, and keeping, events it has no use
    for. Only bindings of `exchange` to the services' own queues are looked at. AMQP cannot list bindings, so
    this needs the management API (`management_url` holds an administrator's login). Returns what it removed,
    as `queue <- routing key`."""
    api = management_api(management_url)
    vhost = vhost_of(amqp_url)
    removed: list[str] = []
    async with httpx.AsyncClient(base_url=api.base_url, auth=api.auth, timeout=30) as client:
        for service, keys in bindings.items():
            queue = Topology(exchange, service).queue_name
            path = f"/api/bindings/{vhost}/e/{quote(exchange, safe='')}/q/{quote(queue, safe='')}"
            listed = await client.get(path)
            if listed.status_code == 404:  # no such queue (the console declares none): nothing bound to it
                continue
            if listed.status_code != 200:
                raise RuntimeError(f"RabbitMQ management API refused GET {path}: {listed.status_code}")
            for binding in listed.json():
                key = str(binding.get("routing_key", ""))
                if key in keys:
                    continue
                gone = await client.delete(f"{path}/{quote(str(binding['properties_key']), safe='')}")
                if gone.status_code not in (200, 204, 404):  # 404: another bootstrap removed it first
                    raise RuntimeError(
                        f"RabbitMQ management API refused to unbind {queue} <- {key}: {gone.status_code}"
                    )
                log.info("stale binding removed", queue=queue, routing_key=key)
                removed.append(f"{queue} <- {key}")
    return removed


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
