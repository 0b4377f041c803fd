"""One RabbitMQ user per service and per outside publisher, against the real broker (its management API
creates them): each may do its own work and is refused the rest with 403 ACCESS_REFUSED."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import aio_pika
import httpx
import pytest
from aio_pika.exceptions import ChannelClosed
from aiormq.exceptions import ChannelAccessRefused
from faststream.rabbit import RabbitBroker
from spm_common.bootstrap import ensure_topology
from spm_common.brokerusers import (
    BINDS,
    MONITOR,
    OUTSIDE_PUBLISHERS,
    PUBLISHES,
    ROUTED,
    USERS,
    broker_users,
    ensure_users,
    user_name,
    with_credentials,
)
from spm_common.db import Connection
from spm_common.deadletters import list_dead_letters
from spm_common.envelope import CloudEvent, Payload, amqp_message, new_event
from spm_common.handlers import Handlers, Meta
from spm_common.outbox import AmqpPublisher
from spm_common.runtime import Runtime
from spm_common.settings import SERVICES, WITH_SCHEMA, ServiceSettings
from spm_common.testing.world import AMQP_URL, MANAGEMENT_URL, World, new_world
from spm_common.topology import Topology, TopologyMissing
from typer.testing import CliRunner

pytestmark = pytest.mark.asyncio
_management = urlsplit(MANAGEMENT_URL)
MANAGEMENT_API = f"{_management.scheme}://{_management.hostname}:{_management.port or 15672}"
MANAGEMENT_AUTH = (_management.username or "", _management.password or "")
REFUSED = (ChannelAccessRefused, ChannelClosed)


class Users:
    def __init__(self, exchange: str, prefix: str) -> None:
        self.exchange = exchange
        self.prefix = prefix
        self.passwords = {u.name: secrets.token_urlsafe(16) for u in broker_users(exchange, prefix)}

    def url(self, who: str) -> str:
        name = user_name(who, self.prefix)
        return with_credentials(AMQP_URL, name, self.passwords[name])


@pytest.fixture(scope="module")
async def users(lab: World) -> AsyncIterator[Users]:
    exchange = f"{lab.name}.{uuid.uuid4().hex[:6]}"
    made = Users(exchange, f"{lab.name}_{uuid.uuid4().hex[:4]}_")
    await ensure_users(MANAGEMENT_URL, AMQP_URL, broker_users(exchange, made.prefix), made.passwords)
    # Every service's queues and exchanges exist before anyone publishes, as `spm-admin bootstrap` makes them.
    await ensure_topology(AMQP_URL, exchange, BINDS)
    yield made
    async with httpx.AsyncClient(base_url=MANAGEMENT_API, auth=MANAGEMENT_AUTH) as client:
        for name in made.passwords:
            await client.delete(f"/api/users/{name}")
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        for service in SERVICES:
            topology = Topology(exchange, service)
            for queue in (topology.queue_name, topology.retry_queue_name, topology.dead_letter_queue_name):
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await channel.queue_delete(queue)
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(topology.requeue_exchange_name)
        for name in (exchange, f"{exchange}.dlx"):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(name)


async def publish(url: str, exchange: str, routing_key: str) -> None:
    """Publish one message with confirms: a refused routing key closes the channel, which raises here."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(b"{}"), routing_key=routing_key, timeout=10)


async def bootstrap_declares(users: Users, service: str) -> None:
    """What `spm-admin bootstrap` declares for the service, with the administrator's login (the same code)."""
    await ensure_topology(AMQP_URL, users.exchange, {service: BINDS[service]})


@asynccontextmanager
async def as_user(users: Users, who: str) -> AsyncIterator[RabbitBroker]:
    broker = RabbitBroker(users.url(who), logger=None)
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.stop()


async def test_the_users_match_what_each_service_publishes_and_binds() -> None:
    for service in WITH_SCHEMA:
        app = importlib.import_module(f"{service}.app")
        settings = importlib.import_module(f"{service}.settings").Settings(amqp_url="amqp://rabbitmq:5672/")
        runtime = app.build(settings)
        bound = runtime.consumer.routing_keys if runtime.consumer else []
        assert sorted(BINDS[service]) == sorted(bound), service
        published = sorted(importlib.import_module(f"{service}.events").__dict__.get("PUBLISHES", {}))
        assert sorted(PUBLISHES[service]) == published, service


async def test_each_service_finds_what_bootstrap_declared_and_publishes_what_it_owns(users: Users) -> None:
    for service in WITH_SCHEMA:
        topology = Topology(users.exchange, service)
        # What its start does: everything is there, so it declares nothing.
        assert await topology.missing(users.url(service), BINDS[service]) == []
        async with as_user(users, service) as broker:
            await topology.ensure(broker, users.url(service), BINDS[service])
        # Declaring, even what exists already, it may not: bootstrap does, with the administrator's login.
        async with as_user(users, service) as broker:
            with pytest.raises(REFUSED, match="ACCESS_REFUSED"):
                await topology.declare(broker, BINDS[service])
    for service, keys in PUBLISHES.items():
        for key in (*keys, *ROUTED.get(service, ())):
            await publish(users.url(service), users.exchange, key)
    await publish(users.url("shop"), users.exchange, "order.placed")
    await publish(users.url("releases"), users.exchange, "upgrade.released")
    await publish(users.url("releases"), users.exchange, "product.announced")
    await publish(users.url("logs"), users.exchange, "site.page.viewed")
    # What the shop published reached the orders service's queue.
    connection = await aio_pika.connect(users.url("orders"))
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(f"{users.exchange}.orders", ensure=False)
        received: list[str] = []
        while (message := await queue.get(no_ack=True, fail=False, timeout=10)) is not None:
            received.append(str(message.routing_key))
    assert sorted(received) == [
        "notification.unsubscribed",
        "order.placed",
        "privacy.request.confirmed",
        "product.announced",
        "upgrade.released",
    ]


def release_tool(users: Users, lab: World, who: str, *args: str, exchange: str = "") -> tuple[int, str]:
    """`spm-orders-admin` with `SPM_AMQP_URL` set to `who`'s login, as README tells a release manager to."""
    from orders.admin import cli  # the orders service's tool; the users and the broker are this module's

    env = lab.env(SPM_AMQP_URL=users.url(who), SPM_EXCHANGE=exchange or users.exchange)
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


async def test_the_release_tool_publishes_with_the_releases_login_and_is_refused_with_others(
    users: Users, lab: World
) -> None:
    """The tool once declared the exchange, which the releases login (configure: nothing) is refused: the
    documented way to announce a release failed with a traceback."""
    news = ["publish", "news", "--announcement-id", f"tool-{uuid.uuid4().hex[:8]}", "--title", "Tin mới",
            "--summary", "Bản cập nhật mới", "--url", "https://spmgroup.vn/news/test"]  # fmt: skip
    code, out = await asyncio.to_thread(release_tool, users, lab, "releases", *news)
    assert code == 0, out
    event_id = out.split("id ")[-1].strip()
    connection = await aio_pika.connect(users.url("orders"))
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(f"{users.exchange}.orders", ensure=False)
        taken = {}
        while (message := await queue.get(no_ack=True, fail=False, timeout=10)) is not None:
            taken[message.message_id] = (message.routing_key, message.user_id)
    assert taken[event_id] == ("product.announced", user_name("releases", users.prefix))

    # The shop's login may not announce anything: refused in one line, with no traceback and no password.
    code, out = await asyncio.to_thread(release_tool, users, lab, "shop", *news)
    assert code == 1 and out.startswith("not published:") and "ACCESS_REFUSED" in out, out
    assert "Traceback" not in out and users.passwords[user_name("shop", users.prefix)] not in out
    # An exchange bootstrap never made: named, with what to do.
    code, out = await asyncio.to_thread(release_tool, users, lab, "releases", *news, exchange=f"{users.exchange}.x")
    assert code == 1 and "does not exist" in out and "spm-admin bootstrap" in out, out


async def test_the_broker_refuses_a_user_id_not_the_publishers_login_and_the_relay_says_its_own(
    users: Users,
) -> None:
    """RabbitMQ validates `user_id`: the contact service's login may publish notification.requested, but not
    as the orders service's user. The relay's publish (AmqpPublisher) carries its own login, which the
    consumer then reads (the notifier believes a request's source only from its service's user)."""
    queue_name = f"{users.exchange}.probe-{uuid.uuid4().hex[:6]}"
    admin = await aio_pika.connect(AMQP_URL)
    async with admin:
        channel = await admin.channel()
        queue = await channel.declare_queue(queue_name, auto_delete=True)
        await queue.bind(users.exchange, "notification.requested")
        connection = await aio_pika.connect_robust(users.url("contact"))
        async with connection:

            async def same() -> aio_pika.abc.AbstractRobustConnection:
                return connection

            own = AmqpPublisher(same, users.exchange, timeout=5, user_id=user_name("contact", users.prefix))
            forged = AmqpPublisher(same, users.exchange, timeout=5, user_id=user_name("orders", users.prefix))
            batch = [("notification.requested", "own", b"{}", "notification.requested")]
            [confirmed] = await own.publish_many(batch)
            assert not isinstance(confirmed, BaseException)
            [refused] = await forged.publish_many(
                [("notification.requested", "forged", b"{}", "notification.requested")]
            )
            assert isinstance(refused, BaseException)
            with pytest.raises(REFUSED, match="PRECONDITION_FAILED"):
                await forged("notification.requested", "forged-one", b"{}")
            await own.close()
            await forged.close()
        taken = []
        while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
            taken.append((message.message_id, message.user_id))
    assert taken == [("own", user_name("contact", users.prefix))]


# Every user, with routing keys it does not own: another's event, a request for mail (which names people and
# carries license keys), and events of the outside world published ahead of the real one (a predictable id
# taken first makes the real event a duplicate, dropped).
NOT_OWNED: list[tuple[str, str]] = [
    ("shop", "upgrade.released"),
    ("shop", "notification.requested"),
    ("releases", "order.placed"),
    ("releases", "notification.requested"),
    ("logs", "order.placed"),
    ("logs", "notification.requested"),
    ("contact", "order.placed"),
    ("contact", "upgrade.released"),
    ("orders", "order.placed"),
    ("orders", "product.announced"),
    ("orders", "notification.sent"),
    ("orders", "notification.sent.contact"),
    ("contact", "notification.failed.orders"),
    ("notifier", "notification.requested"),
    ("notifier", "order.placed"),
    ("audit", "order.recorded"),
    ("audit", "notification.requested"),
    ("audit", "order.placed"),
    ("console", "notification.requested"),
    ("console", "order.placed"),
    ("console", "privacy.request.confirmed"),
    ("monitor", "order.placed"),
]


@pytest.mark.asyncio  # module-wide mark; nothing awaited here
async def test_the_refusals_try_every_user() -> None:
    assert {who for who, _ in NOT_OWNED} == set(USERS)


@pytest.mark.parametrize(("who", "routing_key"), NOT_OWNED)
async def test_publishing_a_routing_key_one_does_not_own_is_refused(users: Users, who: str, routing_key: str) -> None:
    with pytest.raises(REFUSED, match="ACCESS_REFUSED"):
        await publish(users.url(who), users.exchange, routing_key)


@pytest.mark.parametrize("who", [s for s in WITH_SCHEMA if s != "audit"])
async def test_no_service_but_the_audit_may_bind_its_queue_to_everything(users: Users, who: str) -> None:
    """Nor to the mail requests, unless it is the notifier: a queue bound to them would receive every name,
    address, license key and reply body the notifier is asked to send."""
    await bootstrap_declares(users, who)  # its own bindings: allowed
    keys = ["#", "*.*", "notification.*", "#.requested"]
    if who != "notifier":
        keys.append("notification.requested")
    for key in keys:
        connection = await aio_pika.connect(users.url(who))
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(f"{users.exchange}.{who}", ensure=False)
            exchange = await channel.get_exchange(users.exchange, ensure=False)
            with pytest.raises(REFUSED, match="ACCESS_REFUSED"):
                await queue.bind(exchange, routing_key=key)


@pytest.mark.parametrize("who", [*OUTSIDE_PUBLISHERS, MONITOR])
async def test_an_outside_publisher_may_not_even_make_a_queue(users: Users, who: str) -> None:
    connection = await aio_pika.connect(users.url(who))
    async with connection:
        channel = await connection.channel()
        with pytest.raises(REFUSED, match="ACCESS_REFUSED"):
            await channel.declare_queue(exclusive=True)


@pytest.mark.parametrize(
    ("who", "other"),
    [*((w, "notifier") for w in USERS if w != "notifier"), ("notifier", "orders"), ("contact", "audit")],
)
async def test_no_user_may_consume_another_services_queue(users: Users, who: str, other: str) -> None:
    await bootstrap_declares(users, other)
    for queue_name in (f"{users.exchange}.{other}", f"{users.exchange}.{other}.retry", f"{users.exchange}.{other}.dlq"):
        connection = await aio_pika.connect(users.url(who))
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(queue_name, ensure=False)
            with pytest.raises(REFUSED, match="ACCESS_REFUSED"):
                await queue.get(no_ack=True, fail=False, timeout=10)


async def publish_to(url: str, exchange: str, routing_key: str, body: bytes = b"{}") -> None:
    """Publish one message to `exchange` ("" for the default exchange), with confirms."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = channel.default_exchange if not exchange else await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(body, message_id="predictable-1"), routing_key=routing_key, timeout=10)


@pytest.mark.parametrize("who", [*OUTSIDE_PUBLISHERS, MONITOR])
async def test_an_outside_publisher_may_not_put_a_message_straight_into_a_services_queue(
    users: Users, who: str
) -> None:
    """Direct exchanges have no topic permissions: the default exchange (and `X.dlx`) deliver by queue name,
    so a forged order.placed would reach the orders queue, or a mail request the notifier's, as if the broker
    had routed it."""
    await _no_straight_writes(users, who)


@pytest.mark.parametrize("who", WITH_SCHEMA)
async def test_no_service_may_put_a_message_straight_into_another_services_queue(users: Users, who: str) -> None:
    """Not through the default exchange, nor `X.dlx`, nor another service's requeue exchange; through its own,
    its copies reach its own queues."""
    await _no_straight_writes(users, who)
    if who == "console":  # it consumes nothing: it has no queues
        return
    topology = Topology(users.exchange, who)
    try:
        for queue in (topology.queue_name, topology.retry_queue_name, topology.dead_letter_queue_name):
            await publish_to(users.url(who), topology.requeue_exchange_name, queue)
        depths = await queue_depths(users.exchange)
        assert {name: n for name, n in depths.items() if n} == {
            topology.queue_name: 1,
            topology.retry_queue_name: 1,
            topology.dead_letter_queue_name: 1,
        }
    finally:
        await purge_all(users.exchange)


async def _no_straight_writes(users: Users, who: str) -> None:
    await purge_all(users.exchange)  # what the tests before published, as its owners may
    try:
        for other in (s for s in WITH_SCHEMA if s not in (who, "console")):
            await bootstrap_declares(users, other)
            topology = Topology(users.exchange, other)
            for exchange, key in (
                ("", topology.queue_name),
                ("", topology.retry_queue_name),
                ("", topology.dead_letter_queue_name),
                (topology.dead_letter_exchange_name, topology.dead_letter_queue_name),
                (topology.requeue_exchange_name, topology.queue_name),
                (topology.requeue_exchange_name, topology.dead_letter_queue_name),
            ):
                with pytest.raises(REFUSED, match="ACCESS_REFUSED"):
                    await publish_to(users.url(who), exchange, key)
        depths = await queue_depths(users.exchange)
        assert not any(depths.values()), depths
    finally:
        await purge_all(users.exchange)  # what got through must not reach the other tests of the module


async def purge_all(exchange: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        for service in WITH_SCHEMA:
            topology = Topology(exchange, service)
            for name in (topology.queue_name, topology.retry_queue_name, topology.dead_letter_queue_name):
                channel = await connection.channel()
                with contextlib.suppress(aio_pika.exceptions.ChannelNotFoundEntity):  # a queue never declared
                    await (await channel.declare_queue(name, passive=True)).purge()


async def queue_depths(exchange: str) -> dict[str, int]:
    connection = await aio_pika.connect(AMQP_URL)
    depths = {}
    async with connection:
        for service in (s for s in WITH_SCHEMA if s != "console"):
            topology = Topology(exchange, service)
            for name in (topology.queue_name, topology.retry_queue_name, topology.dead_letter_queue_name):
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    queue = await channel.declare_queue(name, passive=True)
                    depths[name] = queue.declaration_result.message_count or 0
    return depths


async def test_the_monitor_reads_queue_depths_and_is_refused_everything_else(users: Users, vhost: str) -> None:
    """The console's `spm_monitor` login: the depth of each queue of its vhost, and nothing more."""
    await bootstrap_declares(users, "notifier")
    dlq = Topology(users.exchange, "notifier").dead_letter_queue_name
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for _ in range(2):
            await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=dlq)
    name = user_name(MONITOR, users.prefix)
    async with httpx.AsyncClient(base_url=MANAGEMENT_API, auth=(name, users.passwords[name]), timeout=30) as api:

        async def depth() -> int | None:
            # The management API's statistics lag the queue by up to its 5 s collection interval.
            answer = await api.get(f"/api/queues/%2F/{dlq}", params={"columns": "name,messages"})
            assert answer.status_code == 200, answer.text
            messages: int | None = answer.json().get("messages")
            return messages

        for _ in range(150):
            if await depth() == 2:
                break
            await asyncio.sleep(0.1)
        assert await depth() == 2
        refused = {
            "read a message": (
                "POST",
                f"/api/queues/%2F/{dlq}/get",
                {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"},
            ),
            "purge a queue": ("DELETE", f"/api/queues/%2F/{dlq}/contents", None),
            "delete a queue": ("DELETE", f"/api/queues/%2F/{dlq}", None),
            "declare a queue": ("PUT", f"/api/queues/%2F/{users.exchange}.monitor", {"durable": True}),
            "delete an exchange": ("DELETE", f"/api/exchanges/%2F/{users.exchange}", None),
            "see the users": ("GET", "/api/users", None),
            "see the definitions": ("GET", "/api/definitions", None),
            "give itself rights": (
                "PUT",
                f"/api/permissions/%2F/{name}",
                {"configure": ".*", "write": ".*", "read": ".*"},
            ),
            "see another vhost": ("GET", f"/api/queues/{vhost}", None),
        }
        for what, (method, path, body) in refused.items():
            answer = await api.request(method, path, json=body)
            assert answer.status_code == 401, (what, answer.status_code, answer.text)
        publish_ = await api.post(
            f"/api/exchanges/%2F/{users.exchange}/publish",
            json={"properties": {}, "routing_key": "order.placed", "payload": "{}", "payload_encoding": "string"},
        )
        assert publish_.status_code == 400 and "ACCESS_REFUSED" in publish_.text
        assert await depth() == 2  # nothing was taken
    # Over AMQP it may connect, and do nothing.
    with pytest.raises(REFUSED, match="ACCESS_REFUSED"):
        await publish(users.url(MONITOR), users.exchange, "order.placed")
    connection = await aio_pika.connect(users.url(MONITOR))
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(dlq, ensure=False)
        with pytest.raises(REFUSED, match="ACCESS_REFUSED"):
            await queue.get(no_ack=True, fail=False, timeout=10)
        channel = await connection.channel()
        with pytest.raises(REFUSED, match="ACCESS_REFUSED"):
            await channel.declare_queue(exclusive=True)


def dev_passwords() -> dict[str, str]:
    """The development-only passwords compose gives the users (the same here, so a compose-like stack using
    this broker at the same time keeps working)."""
    return {f"SPM_{who.upper()}_AMQP_PASSWORD": f"dev-only-{who}-rabbitmq-password" for who in USERS}


def bootstrap(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).parent / "spm-admin"
    return subprocess.run(
        [str(command), "bootstrap"], env={**os.environ, **env}, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
async def vhost() -> AsyncIterator[str]:
    """A vhost of its own: a user's permissions are per vhost, so these never touch the default vhost's."""
    name = f"spm_test_{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=MANAGEMENT_API, auth=MANAGEMENT_AUTH) as client:
        assert (await client.put(f"/api/vhosts/{name}")).status_code in (201, 204)
        yield name
        await client.delete(f"/api/vhosts/{name}")


async def test_spm_admin_bootstrap_makes_the_users_with_only_an_admin_login(vhost: str) -> None:
    world = new_world()
    amqp_url = f"amqp://127.0.0.1:5672/{vhost}"
    env = {
        "SPM_DATABASE_URL": world.database_url,
        "SPM_RABBITMQ_MANAGEMENT_URL": MANAGEMENT_URL,
        "SPM_AMQP_URL": amqp_url,
        "SPM_EXCHANGE": "spm.events",
        "SPM_LOG_FORMAT": "console",
        **dev_passwords(),
    }
    try:
        missing = bootstrap({**env, "SPM_SHOP_AMQP_PASSWORD": ""})
        assert missing.returncode == 2 and "SPM_SHOP_AMQP_PASSWORD: required" in missing.stderr
        for run in range(2):  # and again: the same state
            done = await asyncio.to_thread(bootstrap, env)
            assert done.returncode == 0, done.stderr[-2000:]
            assert (
                "RabbitMQ users ready: spm_contact, spm_orders, spm_notifier, spm_audit, spm_console, spm_shop"
                in done.stdout
            )
            # With the management URL's administrator over AMQP (SPM_AMQP_URL holds no login, as in compose).
            assert "RabbitMQ queues and exchanges ready on spm.events: contact, orders" in done.stdout
            removed = sorted(line for line in done.stdout.splitlines() if line.startswith("stale binding removed"))
            if run == 0:
                assert removed == []
                # What an earlier version left: contact bound to every outcome of anyone's mail, and to all.
                admin = await aio_pika.connect(f"{AMQP_URL.rstrip('/')}/{vhost}")
                async with admin:
                    channel = await admin.channel()
                    queue = await channel.get_queue("spm.events.contact", ensure=False)
                    for stale in ("notification.sent", "#"):
                        await queue.bind("spm.events", routing_key=stale)
            else:
                assert removed == [
                    "stale binding removed: spm.events.contact <- #",
                    "stale binding removed: spm.events.contact <- notification.sent",
                ]
        url = {who: f"amqp://spm_{who}:dev-only-{who}-rabbitmq-password@127.0.0.1:5672/{vhost}" for who in USERS}
        # Every service's own user finds its queues made, and the shop's order reaches the orders queue.
        for service in WITH_SCHEMA:
            assert await Topology("spm.events", service).missing(url[service], BINDS[service]) == [], service
        await publish(url["shop"], "spm.events", "order.placed")
        connection = await aio_pika.connect(url["orders"])
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue("spm.events.orders", ensure=False)
            message = await queue.get(no_ack=True, timeout=10)
            assert message.routing_key == "order.placed"
        # Contact's queue, unbound from what it no longer takes, got no copy of the order.
        connection = await aio_pika.connect(url["contact"])
        async with connection:
            channel = await connection.channel()
            contact = await channel.get_queue("spm.events.contact", ensure=False)
            assert await contact.get(no_ack=True, fail=False, timeout=5) is None
        with pytest.raises(REFUSED, match="ACCESS_REFUSED"):
            await publish(url["shop"], "spm.events", "upgrade.released")
        with pytest.raises(REFUSED, match="ACCESS_REFUSED"):
            await publish(url["contact"], "spm.events", "order.placed")
    finally:
        await world.destroy()


# --- A service run with its own user ----------------------------------------------------------------------


class Works(Payload):
    event_type: ClassVar[str] = "probe.works"


class Breaks(Payload):
    event_type: ClassVar[str] = "probe.breaks"


PROBE_MIGRATIONS = Path(__file__).parent / "probe_migrations"


@asynccontextmanager
async def own_users(lab: World) -> AsyncIterator[Users]:
    """Users of an exchange of its own (a user's permissions name its exchange and queues)."""
    made = Users(f"{lab.name}.{uuid.uuid4().hex[:6]}", f"{lab.name}_{uuid.uuid4().hex[:4]}_")
    lab.exchanges.add(made.exchange)  # its queues and exchanges go with the world
    await ensure_users(MANAGEMENT_URL, AMQP_URL, broker_users(made.exchange, made.prefix), made.passwords)
    try:
        yield made
    finally:
        async with httpx.AsyncClient(base_url=MANAGEMENT_API, auth=MANAGEMENT_AUTH) as client:
            for name in made.passwords:
                await client.delete(f"/api/users/{name}")


async def test_a_service_run_as_its_own_user_consumes_retries_and_dead_letters(
    lab: World, probe_settings: Callable[..., ServiceSettings]
) -> None:
    attempts: list[str] = []
    worked: list[str] = []

    async def breaks(conn: Connection, payload: Breaks, event: Meta) -> None:
        attempts.append(event.id)
        raise RuntimeError("the licence server is away")

    async def works(conn: Connection, payload: Works, event: Meta) -> None:
        worked.append(event.id)

    handlers = Handlers().on(Breaks, breaks).on(Works, works)
    async with own_users(lab) as users:
        await ensure_topology(AMQP_URL, users.exchange, {"orders": tuple(handlers.bindings())})
        settings = probe_settings(
            exchange=users.exchange, amqp_url=users.url("orders"), max_attempts=2, consumer_linger_ms=0
        )
        runtime = Runtime(settings, migrations=PROBE_MIGRATIONS, handlers=handlers)
        topology = runtime.topology
        await runtime.start()
        try:
            failing, working = new_event("probe.breaks", SOURCE, {}), new_event("probe.works", SOURCE, {})
            for event in (failing, working):
                await publish_event(users.exchange, event)
            settled = {topology.queue_name: 0, topology.retry_queue_name: 0, topology.dead_letter_queue_name: 1}
            async with asyncio.timeout(15):
                while not (worked and await queue_depths(users.exchange) == settled):
                    await asyncio.sleep(0.05)
            assert worked == [working.id] and attempts == [failing.id, failing.id]
            # The operator's listing of its dead letters, through the service's own user, puts them back.
            [shown] = await list_dead_letters(users.url("orders"), topology, 10, runtime.pool)
            assert shown.message_id == failing.id and shown.reason == "RuntimeError: the licence server is away"
            connection = await aio_pika.connect(AMQP_URL)
            async with connection:
                channel = await connection.channel()
                queue = await channel.get_queue(topology.dead_letter_queue_name, ensure=False)
                dead = await queue.get(no_ack=True, timeout=10)
            # Put back by the listing, dead-lettered by the consumer, retried before: all through its own exchange.
            assert dead.exchange == topology.requeue_exchange_name
            assert dead.message_id == failing.id and (dead.headers or {})["x-spm-attempt"] == 2
            deaths = (dead.headers or {})["x-death"]
            assert isinstance(deaths, list) and isinstance(deaths[0], dict)
            assert (deaths[0]["queue"], deaths[0]["exchange"], deaths[0]["reason"]) == (
                topology.retry_queue_name,
                topology.requeue_exchange_name,
                "expired",
            )
        finally:
            await runtime.stop()


async def test_a_service_run_as_its_own_user_without_bootstrap_stops_and_says_so(
    lab: World, probe_settings: Callable[..., ServiceSettings]
) -> None:
    handlers = Handlers().on(Works, _nothing)
    async with own_users(lab) as users:
        settings = probe_settings(exchange=users.exchange, amqp_url=users.url("orders"))
        runtime = Runtime(settings, migrations=PROBE_MIGRATIONS, handlers=handlers)
        try:
            with pytest.raises(TopologyMissing) as raised:
                await runtime.start()
        finally:
            await runtime.stop()
        topology = runtime.topology
        assert str(raised.value) == (
            f"RabbitMQ lacks {users.exchange}, {users.exchange}.dlx, {topology.requeue_exchange_name}, "
            f"{topology.queue_name}, {topology.retry_queue_name}, {topology.dead_letter_queue_name} and this "
            "service's broker user may not declare them: run `spm-admin bootstrap` (compose's db-init) with the "
            "administrator's login first"
        )
        # It declared nothing on its way.
        assert len(await topology.missing(AMQP_URL, handlers.bindings())) == 6


async def _nothing(conn: Connection, payload: Works, event: Meta) -> None:
    return None


SOURCE = "https://shop.example/orders"


async def publish_event(exchange: str, event: CloudEvent) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(amqp_message(event), routing_key=event.type, timeout=10)
