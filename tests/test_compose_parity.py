"""`docker compose up -d` as compose configures it, run without Docker: the stack's own environment, end to end.

Each container's environment is resolved from docker-compose.yml the way compose resolves it (anchors and
merge keys, `${VAR:-default}` and the rest), once with no `.env` and once with `.env.example` as the `.env`
(its "change-me" placeholders replaced by random 40-character values, as an operator would). Then:

- every variable compose gives a container must be one its code reads, and everything the code needs inside
  a container (the hosts of Postgres, RabbitMQ and the SMTP server) must come from compose;
- db-init's command and the five services' (the Dockerfile's CMD) run as processes with exactly that
  environment, on the container ports. The only changes are where the containers are: `postgres`,
  `rabbitmq` and `mailpit` in a URL or an `*_HOST`/`*_PORT` pair become this machine's test servers, the
  database `spm` this test's own, and PATH's `/app/.venv` this checkout's environment. The RabbitMQ user the
  rabbitmq container would create (RABBITMQ_DEFAULT_USER/PASS) is created on the local broker; local Postgres
  trusts local logins, so the passwords go unchecked. A contact message, an order and a license recovery
  must then reach the SMTP server.

Compose reads SPM_EXCHANGE and SPM_RABBITMQ_USER from the shell: the test passes its own, so runs on one
machine stay apart. The services listen on 8080-8084 as in their containers, so a lock file makes two runs
of this test on one machine take turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from audit.settings import Settings as AuditSettings
from console.settings import Settings as ConsoleSettings
from contact.settings import Settings as ContactSettings
from notifier.settings import Settings as NotifierSettings
from orders.settings import Settings as OrdersSettings
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings
from spm_common.settings import PLACEHOLDER, WITH_SCHEMA, BootstrapSettings
from spm_common.testing.compose import Compose, filled_in, parse_dotenv
from spm_common.testing.outside import publish
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import ADMIN_URL, AMQP_URL, World, new_world

ROOT = Path(__file__).resolve().parents[1]
# The code each built container runs, and so the variables it reads.
SETTINGS: dict[str, type[BaseSettings]] = {
    "contact": ContactSettings,
    "contact-relay": ContactSettings,
    "orders": OrdersSettings,
    "notifier": NotifierSettings,
    "audit": AuditSettings,
    "console": ConsoleSettings,
    "db-init": BootstrapSettings,
}
# The infrastructure containers and the port each serves the others on.
INFRASTRUCTURE = {"postgres": 5432, "rabbitmq": 5672, "mailpit": 1025}
SERVICE_PORTS = {"contact": 8081, "orders": 8082, "notifier": 8083, "audit": 8084}
DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "amqp": 5672, "amqps": 5671, "http": 80}
RABBITMQ_MANAGEMENT_PORT = 15672
IMAGE_VENV = "/app/.venv"
READY_TIMEOUT = 60.0
MAIL_TIMEOUT = 20.0
LOCK = Path(tempfile.gettempdir()) / "spm-compose-parity.lock"


@dataclass
class Stack:
    """One way an operator starts the stack: compose's view of it, and the names this run gave it."""

    compose: Compose
    world: World


def dotenv_from_example() -> dict[str, str]:
    """.env.example as an operator fills it in: each value holding the placeholder replaced by a random one."""
    values = parse_dotenv((ROOT / ".env.example").read_text(encoding="utf-8"))
    return filled_in(values, PLACEHOLDER)


@pytest.fixture(params=["without .env", "with .env.example"])
def stack(request: pytest.FixtureRequest) -> Stack:
    world = new_world()
    shell = {"SPM_EXCHANGE": world.exchange, "SPM_RABBITMQ_USER": world.name}
    dotenv = dotenv_from_example() if request.param == "with .env.example" else None
    return Stack(Compose(ROOT, shell, dotenv), world)


def built(compose: Compose) -> list[str]:
    return [name for name, container in compose.containers.items() if "build" in container]


def read_settings(cls: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """`cls` as the code loads it in a container whose environment is `env` (and nothing of this process's)."""
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.upper().startswith("SPM_")]:
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        try:
            return cls()
        except ValidationError as exc:
            names = [f"SPM_{'_'.join(str(p) for p in error['loc'])}".upper() for error in exc.errors()]
            pytest.fail(f"{cls.__module__}.{cls.__name__} refuses compose's environment: {names}")


def test_compose_gives_each_container_what_its_code_reads_and_needs(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = stack.compose
    assert set(built(compose)) == set(SETTINGS), "a new container: say which settings class reads its environment"
    for name, cls in SETTINGS.items():
        env = compose.environment(name)
        known = {f"SPM_{field}".upper() for field in cls.model_fields}
        unknown = sorted(set(env) - known)
        assert not unknown, f"{name}: compose sets {unknown}, which its code does not read"

        image = compose.image(name, base_env={})
        settings = read_settings(cls, {**image.env, **env}, monkeypatch)
        # What compose passes empty (`${SPM_SMTP_USERNAME:-}`, or `SPM_SMTP_USERNAME=` in .env) is unset.
        for variable in (v for v, value in env.items() if value == ""):
            field = variable.removeprefix("SPM_").lower()
            if field not in cls.model_fields:
                continue
            value = getattr(settings, field)
            default = cls.model_fields[field].get_default(call_default_factory=True)
            if isinstance(value, SecretStr) and isinstance(default, SecretStr):
                value, default = value.get_secret_value(), default.get_secret_value()
            assert value == default, (
                f"{name}: compose passes {variable} empty, and the code reads it as {value!r} "
                f"instead of its default {default!r} (unset)"
            )
        # Inside a container the code's 127.0.0.1 defaults reach nothing: compose must name every server.
        if isinstance(settings, BootstrapSettings):
            management = settings.rabbitmq_management_url
            reaches = {
                "postgres": urlsplit(settings.database_url).hostname,
                "rabbitmq": urlsplit(management.get_secret_value() if management else settings.amqp_url).hostname,
            }
        else:
            reaches = {
                "postgres": urlsplit(settings.role_database_url()).hostname,
                "rabbitmq": urlsplit(settings.role_amqp_url()).hostname,
            }
        if name == "notifier":
            reaches["mailpit"] = settings.smtp_host
        if name == "console":
            # The console reaches the services' operator APIs by their container names.
            for service in ("contact", "orders", "audit", "notifier"):
                reaches[service] = urlsplit(getattr(settings, f"console_{service}_url")).hostname
        assert reaches == {container: container for container in reaches}, f"{name} would reach {reaches}"


# --- The stack run as processes --------------------------------------------------------------------------------


def relocate(
    env: dict[str, str], endpoints: dict[tuple[str, int], tuple[str, int]], databases: dict[str, str]
) -> dict[str, str]:
    """`env` with each container address (`host:port` in a URL, or an `X_HOST`/`X_PORT` pair) replaced by the
    server standing in for it, and each database name by the test's."""
    hosts = {host for host, _ in endpoints}
    moved = dict(env)
    for key, value in env.items():
        parts = urlsplit(value)
        if "://" in value and parts.hostname in hosts:
            where = (parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme])
            assert where in endpoints, f"{key} names {where}, which no container serves"
            host, port = endpoints[where]
            userinfo = parts.netloc.rpartition("@")[0]
            path = parts.path
            if parts.scheme.startswith("postgres"):
                database = path.lstrip("/")
                assert database in databases, f"{key}: unexpected database {database!r}"
                path = f"/{databases[database]}"
            netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
            moved[key] = urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))
        elif key.endswith("_HOST") and value in hosts:
            port_key = key.removesuffix("_HOST") + "_PORT"
            host, port = endpoints[(value, int(env[port_key]))]
            moved[key], moved[port_key] = host, str(port)
    return moved


def process_environment(stack: Stack, name: str, smtp: SmtpServer) -> tuple[list[str], dict[str, str]]:
    """The command and environment of container `name`, with the containers' addresses moved to this machine."""
    admin, amqp = urlsplit(ADMIN_URL), urlsplit(AMQP_URL)
    endpoints = {
        ("postgres", INFRASTRUCTURE["postgres"]): (admin.hostname or "127.0.0.1", admin.port or 5432),
        ("rabbitmq", INFRASTRUCTURE["rabbitmq"]): (amqp.hostname or "127.0.0.1", amqp.port or 5672),
        # The management HTTP API, through which db-init makes the RabbitMQ users.
        ("rabbitmq", RABBITMQ_MANAGEMENT_PORT): (amqp.hostname or "127.0.0.1", RABBITMQ_MANAGEMENT_PORT),
        ("mailpit", INFRASTRUCTURE["mailpit"]): ("127.0.0.1", smtp.port),
        # The services' own containers (the console calls their APIs) listen on their container ports here.
        **{(name, port): ("127.0.0.1", port) for name, port in SERVICE_PORTS.items()},
    }
    image = stack.compose.image(name, base_env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    env = {**image.env, **relocate(stack.compose.environment(name), endpoints, {"spm": stack.world.name})}
    # The image's virtual environment is this checkout's.
    env["PATH"] = env["PATH"].replace(IMAGE_VENV, sys.prefix)
    return stack.compose.command(name, image), env


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, f"rabbitmqctl {args[0]}: {output.decode(errors='replace')}"


@contextlib.asynccontextmanager
async def rabbitmq_container_user(stack: Stack) -> AsyncIterator[None]:
    """The user the rabbitmq container creates at its first start, on this machine's broker."""
    env = stack.compose.environment("rabbitmq")
    user, password = env["RABBITMQ_DEFAULT_USER"], env["RABBITMQ_DEFAULT_PASS"]
    assert user == stack.world.name, "SPM_RABBITMQ_USER from the shell names the user"
    vhost = env.get("RABBITMQ_DEFAULT_VHOST", "/")
    await rabbitmqctl("add_user", user, password)
    try:
        await rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        # As the image makes it: an administrator, who may make the other users through the management API.
        await rabbitmqctl("set_user_tags", user, "administrator")
        yield
    finally:
        await rabbitmqctl("delete_user", user)


@contextlib.contextmanager
def container_ports(ports: list[int]) -> Iterator[None]:
    """Turns with other runs of this test on the machine, then checks nothing else holds the ports."""
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for port in ports:
            with socket.socket() as probe:
                try:
                    probe.bind(("0.0.0.0", port))  # noqa: S104 (where the services will listen)
                except OSError:
                    pytest.fail(f"port {port} is taken: the services listen on their container ports")
        yield


@dataclass
class Container:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


def start(name: str, command: list[str], env: dict[str, str], logs: Path) -> Container:
    log = logs / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    return Container(name, process, log)


async def stop(container: Container) -> None:
    """SIGTERM, as `docker compose down` sends, then SIGKILL after the stop grace period."""
    if container.process.poll() is None:
        container.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(container.process.wait, 20)
    except subprocess.TimeoutExpired:
        os.killpg(container.process.pid, signal.SIGKILL)
        container.process.wait()


def health_port(container: dict[str, Any]) -> int:
    """The port of the container's /readyz, read from its health check."""
    match = re.search(r"http://127\.0\.0\.1:(\d+)/readyz", " ".join(container["healthcheck"]["test"]))
    assert match, "the health check asks /readyz"
    return int(match[1])


async def wait_until_ready(containers: dict[str, Container], ports: dict[str, int]) -> None:
    pending = dict(ports)
    deadline = time.monotonic() + READY_TIMEOUT
    async with httpx.AsyncClient(timeout=2) as client:
        while pending:
            for name, port in list(pending.items()):
                container = containers[name]
                if container.process.poll() is not None:
                    pytest.fail(f"{name} exited with {container.process.returncode}:\n{container.output()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        del pending[name]
            if pending and time.monotonic() > deadline:
                pytest.fail(f"not ready within {READY_TIMEOUT}s: {sorted(pending)}")
            await asyncio.sleep(0.2)


async def publish_order_placed(exchange: str, data: dict[str, Any]) -> None:
    """As the shop does (CONTRACT section 3): a CloudEvent on the exchange, routing key = type."""
    await publish(exchange, "order.placed", data)


def order(email: str) -> dict[str, Any]:
    return {
        "order_id": f"FS-2026-{uuid.uuid4().hex[:10].upper()}",
        "placed_at": "2026-11-29T03:59:12Z",
        "currency": "USD",
        "total": "49.00",
        "purchaser": {"name": "Compose Parity", "email": email, "locale": "en"},
        "items": [{"sku": "SPM-DICT-PRO", "product_name": "SPM Dictionary Pro", "quantity": 1, "unit_price": "49.00"}],
    }


@pytest.mark.timeout(150)
async def test_the_stack_as_compose_configures_it_delivers_every_mail(
    stack: Stack, smtp: SmtpServer, tmp_path: Path
) -> None:
    compose = stack.compose
    ports = {service: health_port(compose.containers[service]) for service in WITH_SCHEMA}
    mail_from = compose.environment("notifier")["SPM_MAIL_FROM"]
    stack.world.exchanges.add(stack.world.exchange)
    containers: dict[str, Container] = {}
    with container_ports(list(ports.values())):
        try:
            async with rabbitmq_container_user(stack):
                try:
                    await run_the_stack(stack, smtp, tmp_path, containers, ports, mail_from)
                except (AssertionError, TimeoutError):
                    for container in containers.values():
                        print(f"--- {container.name} ---\n{container.output()}", file=sys.stderr)
                    raise
                finally:
                    # Before the broker user goes, as compose stops the services before the broker.
                    await asyncio.gather(*(stop(container) for container in containers.values()))
        finally:
            await stack.world.destroy()


async def run_the_stack(
    stack: Stack,
    smtp: SmtpServer,
    tmp_path: Path,
    containers: dict[str, Container],
    ports: dict[str, int],
    mail_from: str,
) -> None:
    compose = stack.compose
    command, env = process_environment(stack, "db-init", smtp)
    init = start("db-init", command, env, tmp_path)
    code = await asyncio.to_thread(init.process.wait, READY_TIMEOUT)
    assert code == 0, f"db-init exited with {code}:\n{init.output()}"

    for service in WITH_SCHEMA:
        command, env = process_environment(stack, service, smtp)
        containers[service] = start(service, command, env, tmp_path)
    await wait_until_ready(containers, ports)

    visitor = f"parity-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['contact']}", timeout=10) as client:
        response = await client.post(
            "/v1/messages", json={"name": "Compose Parity", "email": visitor, "message": "Hello", "locale": "en"}
        )
    assert response.status_code == 202, response.text
    [acknowledgement] = await smtp.wait_to(visitor, timeout=MAIL_TIMEOUT)
    assert acknowledgement.rcpt_tos == [visitor]
    assert acknowledgement.message["Subject"] == "We received your message"
    assert acknowledgement.message["From"] == mail_from

    buyer = f"parity-buyer-{uuid.uuid4().hex[:8]}@example.com"
    placed = order(buyer)
    await publish_order_placed(compose.environment("orders")["SPM_EXCHANGE"], placed)
    [confirmation] = await smtp.wait_to(buyer, timeout=MAIL_TIMEOUT)
    assert confirmation.rcpt_tos == [buyer]
    assert confirmation.message["Subject"] == f"Your order {placed['order_id']}: license keys and downloads"

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['orders']}", timeout=10) as client:
        response = await client.post("/v1/license-recovery", json={"email": buyer})
    assert response.status_code == 202, response.text
    recovery = (await smtp.wait_to(buyer, count=2, timeout=MAIL_TIMEOUT))[-1]
    assert recovery.rcpt_tos == [buyer]
    assert recovery.message["Subject"] == "Your license keys and downloads"

    # The console answers, and reaches the inbox it shows through the contact service's URL compose gives it.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['console']}", timeout=10) as client:
        login = await client.get("/login")
    assert login.status_code == 200 and 'lang="vi"' in login.text
    console_env = process_environment(stack, "console", smtp)[1]
    assert console_env["SPM_CONSOLE_CONTACT_URL"] == f"http://127.0.0.1:{ports['contact']}"
