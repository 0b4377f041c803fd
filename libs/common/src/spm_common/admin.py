"""`spm-admin`: the operator's commands for the whole system (bootstrap, migrate, run, dead letters).

Each service package `NAME` provides `NAME.settings.Settings` and `NAME.settings.MIGRATIONS`; this is how
the commands here find them.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import aio_pika
import asyncpg
import typer
import yaml

from spm_common import allowlist
from spm_common import asyncapi as event_docs
from spm_common.bootstrap import (
    ensure_database,
    ensure_roles,
    ensure_topology,
    remove_stale_bindings,
    with_database,
)
from spm_common.brokerusers import BINDS, USERS, broker_users, ensure_users, user_name
from spm_common.deadletters import list_dead_letters, replay_dead_letters
from spm_common.handlers import Handlers
from spm_common.logging import configure_logging
from spm_common.migrations import SchemaRoles
from spm_common.migrations import migrate as apply_migrations
from spm_common.settings import (
    SERVICES,
    WITH_SCHEMA,
    BootstrapSettings,
    CommonSettings,
    ServiceSettings,
    from_environment,
    load,
)
from spm_common.topology import Topology

if TYPE_CHECKING:  # building a runtime imports it; the command line need not, to start
    from spm_common.runtime import Runtime

cli = typer.Typer(help="Operate the SPM services.", no_args_is_help=True)
dlq = typer.Typer(help="Inspect and replay dead-lettered messages.", no_args_is_help=True)
cli.add_typer(dlq, name="dlq")

# A service gets this long to finish its graceful shutdown (uvicorn allows 10 s for open requests).
STOP_TIMEOUT_SECONDS = 15.0
ServiceArg = Annotated[str, typer.Argument(help=f"one of {', '.join(SERVICES)}")]


def service_settings(service: str) -> tuple[ServiceSettings, object]:
    if service not in WITH_SCHEMA:
        raise typer.BadParameter(f"unknown service {service!r}; expected one of {', '.join(WITH_SCHEMA)}")
    module = importlib.import_module(f"{service}.settings")
    return load(module.Settings), module.MIGRATIONS


@cli.command()
def bootstrap() -> None:
    """Create the database, its extensions, each service's owner and login roles and schema, and apply the
    migrations of every service installed here (needs SPM_DATABASE_URL with admin rights); make the RabbitMQ
    users (with SPM_RABBITMQ_MANAGEMENT_URL) and declare every installed service's queues, exchanges and
    bindings (as SPM_AMQP_URL's login, else the management URL's administrator). Safe to run again."""
    settings = load(BootstrapSettings)
    installed = [s for s in WITH_SCHEMA if importlib.util.find_spec(s) is not None]
    management = settings.rabbitmq_management_url

    async def go() -> tuple[dict[str, list[str]], list[str]]:
        await ensure_database(settings.database_url)
        await ensure_roles(settings.database_url, settings.role_passwords())
        applied = {service: await _migrate_as_owner(settings.database_url, service) for service in installed}
        if management is not None:
            passwords = {user_name(who): settings.broker_password(who) for who in USERS}
            await ensure_users(
                management.get_secret_value(), settings.amqp_url, broker_users(settings.exchange), passwords
            )
        # BINDS: what each service's consumer binds (a test compares them), and its user's topic permissions.
        bindings = {s: BINDS[s] for s in installed}
        await ensure_topology(settings.admin_amqp_url(), settings.exchange, bindings)
        removed = []
        if management is not None:
            removed = await remove_stale_bindings(
                management.get_secret_value(), settings.amqp_url, settings.exchange, bindings
            )
        return applied, removed

    applied, removed = asyncio.run(go())
    for service, done in applied.items():
        typer.echo(f"{service}: {len(done)} migration(s) applied")
    typer.echo("database, roles and schemas ready")
    if management is not None:
        typer.echo(f"RabbitMQ users ready: {', '.join(user_name(who) for who in USERS)}")
        for binding in removed:
            typer.echo(f"stale binding removed: {binding}")
    typer.echo(f"RabbitMQ queues and exchanges ready on {settings.exchange}: {', '.join(installed)}")


@cli.command()
def migrate(services: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Apply pending migrations of the given services (all five by default), each as its schema's owner
    role (needs SPM_DATABASE_URL with admin rights: the services' logins may not change their schemas)."""
    settings = load(CommonSettings)
    for service in services or list(WITH_SCHEMA):
        if service not in WITH_SCHEMA:
            raise typer.BadParameter(f"unknown service {service!r}; expected one of {', '.join(WITH_SCHEMA)}")
        applied = asyncio.run(_migrate_as_owner(settings.database_url, service))
        typer.echo(f"{service}: {len(applied)} migration(s) applied")


async def _migrate_as_owner(admin_url: str, service: str) -> list[str]:
    migrations: Path = importlib.import_module(f"{service}.settings").MIGRATIONS
    conn = await asyncpg.connect(admin_url)
    try:
        return await apply_migrations(conn, service, migrations, SchemaRoles.of(service))
    finally:
        await conn.close()


@cli.command()
def run(services: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Bootstrap, migrate, then run the services as local processes until Ctrl-C or SIGTERM."""
    chosen = services or list(WITH_SCHEMA)
    bootstrap()
    migrate(chosen)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    # Installed before the first child starts, so a signal never finds children without a parent to stop them.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    children: dict[str, subprocess.Popen[bytes]] = {}
    for name, module in _processes(chosen):
        children[name] = subprocess.Popen([sys.executable, "-m", module])
        typer.echo(f"{name} started (pid {children[name].pid})", err=True)
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                typer.echo(f"{name} exited with {child.returncode}; stopping the others", err=True)
                exit_code = child.returncode or 1
                stopping = True
        time.sleep(0.2)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for name, child in children.items():
        try:
            code = child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            typer.echo(f"{name} did not stop within {STOP_TIMEOUT_SECONDS:.0f}s and was killed", err=True)
            exit_code = exit_code or 1
            continue
        if code != 0 and exit_code == 0:
            typer.echo(f"{name} stopped with exit code {code}", err=True)
            exit_code = code if code > 0 else 1
    typer.echo("all services stopped" + ("" if exit_code == 0 else f" (exit code {exit_code})"), err=True)
    raise typer.Exit(exit_code)


def _processes(services: list[str]) -> list[tuple[str, str]]:
    """(name, module) of each process to run: a service, and its outbox relay where it runs apart."""
    processes = [(name, name) for name in services]
    if "contact" in services and getattr(service_settings("contact")[0], "contact_outbox_relay", "") == "separate":
        processes.append(("contact-relay", "contact.relay"))
    return processes


@cli.command()
def check() -> None:
    """Say whether Postgres and RabbitMQ answer, and if not, which variable to set and how to start them."""
    settings = load(CommonSettings)
    database_url = from_environment("SPM_TEST_DATABASE_URL", settings.database_url)
    amqp_url = from_environment("SPM_TEST_AMQP_URL", settings.amqp_url)
    problems = []

    async def postgres() -> None:
        conn = await asyncpg.connect(with_database(database_url, "postgres"), timeout=5)
        await conn.close()

    async def rabbitmq() -> None:
        connection = await aio_pika.connect(amqp_url, timeout=5)
        await connection.close()

    for name, probe, variable, start in (
        (
            "Postgres",
            postgres,
            "SPM_DATABASE_URL (tests: SPM_TEST_DATABASE_URL)",
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        ),
        ("RabbitMQ", rabbitmq, "SPM_AMQP_URL (tests: SPM_TEST_AMQP_URL)", "rabbitmq-server -detached"),
    ):
        try:
            asyncio.run(probe())
        except Exception as exc:
            problems.append(
                f"{name} does not answer ({type(exc).__name__}). Point {variable} at a running "
                f"server, or start the local one: {start}"
            )
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("Postgres and RabbitMQ answer")


@cli.command()
def docs(out: Path = Path("docs")) -> None:
    """Write each service's AsyncAPI (YAML) and OpenAPI (JSON) documents, generated from the code."""
    for service, asyncapi, openapi in generated_documents():
        (out / "asyncapi").mkdir(parents=True, exist_ok=True)
        (out / "openapi").mkdir(parents=True, exist_ok=True)
        (out / "asyncapi" / f"{service}.yaml").write_text(asyncapi, encoding="utf-8")
        (out / "openapi" / f"{service}.json").write_text(openapi, encoding="utf-8")
        typer.echo(f"{service}: docs/asyncapi/{service}.yaml, docs/openapi/{service}.json")
    path, document = trail_fields_document()
    path.write_text(document, encoding="utf-8")
    typer.echo(f"audit: {path.name}, the payload fields the trail keeps of each event type")


def trail_fields_document() -> tuple[Path, str]:
    """Where the audit package keeps its allow-list, and what it must hold: every event type any service
    publishes or consumes, with the fields of its payload models (`spm_common.allowlist`)."""
    trees: dict[str, allowlist.FieldTree] = {}
    for service in WITH_SCHEMA:
        events = service_events(service)
        for registry in (events.publishes, events.consumes):
            for event_type, model in registry.items():
                trees[event_type] = allowlist.merge(trees.get(event_type, {}), allowlist.fields_of(model))
    package = importlib.import_module("audit")
    path = Path(str(package.__file__)).parent / "trail_fields.json"
    return path, json.dumps(trees, indent=2, sort_keys=True) + "\n"


def built(service: str) -> tuple[ServiceSettings, Runtime]:
    """A service's settings and runtime as its `app.build` makes them (nothing is started or connected)."""
    app_module = importlib.import_module(f"{service}.app")
    settings = importlib.import_module(f"{service}.settings").Settings(amqp_url="amqp://rabbitmq:5672/")
    runtime: Runtime = app_module.build(settings)
    return settings, runtime


def generated_documents() -> list[tuple[str, str, str]]:
    documents = []
    for service in WITH_SCHEMA:
        settings, runtime = built(service)
        # Sorted, so the document does not depend on the order FastStream happens to register things in.
        base = runtime.asyncapi().schema.to_specification().to_jsonable()
        spec = event_docs.document(base, settings.exchange, service_events(service, runtime))
        asyncapi = yaml.safe_dump(spec, sort_keys=True, allow_unicode=True)
        openapi = (
            json.dumps(
                importlib.import_module(f"{service}.app").create(settings).openapi(), indent=2, ensure_ascii=False
            )
            + "\n"
        )
        documents.append((service, asyncapi, openapi))
    return documents


def service_events(service: str, runtime: Runtime | None = None) -> event_docs.Events:
    """What a service consumes, from its handlers (the registry its consumer runs), and what its `events.py`
    says it publishes (nothing, for a service without one)."""
    if runtime is None:
        runtime = built(service)[1]
    consumed = runtime.consumer.handlers if runtime.consumer else Handlers()
    try:
        events = importlib.import_module(f"{service}.events")
    except ModuleNotFoundError as exc:
        if exc.name != f"{service}.events":
            raise
        events = None
    return event_docs.Events(
        publishes=getattr(events, "PUBLISHES", {}),
        consumes=consumed.consumes,
        # The notifier's outcomes go out under a key of their own; contact binds its own of those.
        routing_keys={**getattr(events, "ROUTING_KEYS", {}), **consumed.routing_keys},
        examples=getattr(events, "EXAMPLES", {}),
        consumes_everything=consumed.every is not None,
    )


@dlq.command("list")
def dlq_list(service: ServiceArg, limit: int = 20) -> None:
    """Show dead-lettered messages (id, type, attempts, reason) without removing them (see
    spm_common.deadletters: each goes back to the end of the queue; --limit at least the queue's length
    leaves the order as it was)."""
    settings, _ = service_settings(service)
    topology = Topology(settings.exchange, service)
    found = asyncio.run(list_dead_letters(settings.role_amqp_url(), topology, limit, settings.role_database_url()))
    for letter in found:
        typer.echo(letter.model_dump_json())


@dlq.command("replay")
def dlq_replay(service: ServiceArg, limit: int = 1000) -> None:
    """Move dead-lettered messages back to the service's queue for another round of attempts."""
    settings, _ = service_settings(service)
    topology = Topology(settings.exchange, service)
    moved = asyncio.run(replay_dead_letters(settings.role_amqp_url(), topology, limit, settings.role_database_url()))
    typer.echo(f"{moved} message(s) replayed to {topology.queue_name}")


def main() -> None:
    configure_logging("admin", from_environment("SPM_LOG_FORMAT", "console"))
    cli()
