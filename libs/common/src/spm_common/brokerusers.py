"""RabbitMQ users: one per service and one per outside publisher, each limited to what it does.

A service's user may configure nothing: `spm-admin bootstrap` declares every queue, exchange and binding with
the administrator's login (spm_common.topology), and the service only checks at start that they exist. It may
read (consume) its own queues (`X.S`, `X.S.retry`, `X.S.dlq`) and nothing else, and write to two exchanges:
the topic exchange `X`, where its topic permissions let it publish only the routing keys it publishes, and
its own `X.S.requeue`, which routes to its own three queues only (its retry and dead-letter copies, and the
dead letters it replays, lists or keeps). It may write neither to the default exchange (`amq.default`) nor to
`X.dlx`: both deliver by queue name, with no topic permissions, so a user allowed either could put a forged
event into any service's queue. An outside publisher may only publish its own routing keys to `X`. So
whoever holds one login can neither read another service's queue nor bind a queue at all, nor publish an
event someone else owns, nor put a message straight into a queue: the broker refuses with 403 ACCESS_REFUSED
(for a publish, by closing the channel).

One more user, `spm_monitor`, is the console's, to show each queue's depth on its system page: the
management HTTP API's `management` tag with permissions matching nothing on the vhost. It may list the
vhost's queues with their message counts and nothing else: no message read, published, purged, no queue or
exchange declared or deleted, no user or definition seen, no other vhost (the management API answers 401).

`spm-admin bootstrap` creates the users through the management HTTP API (SPM_RABBITMQ_MANAGEMENT_URL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from spm_common.notifications import NOTIFICATION_FAILED, NOTIFICATION_SENT, outcome_routing_key
from spm_common.settings import WITH_SCHEMA
from spm_common.topology import Topology

# The routing keys each service publishes and binds, as its code does (a test compares them with each
# service's PUBLISHES and its consumer's bindings).
PUBLISHES: dict[str, tuple[str, ...]] = {
    "contact": (
        "contact.message.received",
        "contact.message.replied",
        "contact.message.closed",
        "contact.message.reopened",
        "contact.messages.deleted",
        "privacy-policy.published",
        "privacy.request.confirmed",
        "notification.requested",
        "privacy.request.completed",
        "retention.purged",
    ),
    "orders": (
        "order.recorded",
        "security.card-data-removed",
        "notification.requested",
        "privacy.request.completed",
        "retention.purged",
    ),
    "notifier": (
        "notification.sent",
        "notification.failed",
        "notification.unsubscribed",
        "privacy.request.completed",
        "retention.purged",
    ),
    # Every service answers each confirmed privacy request for its own data (spm_common.privacy), and reports
    # what its retention jobs removed (spm_common.retention).
    "audit": ("privacy.request.completed", "retention.purged"),
    # What operators see and do, for the audit trail.
    "console": ("operator.action", "retention.purged"),
}
# Routing keys a service publishes that are not event types: the notifier sends each outcome to the service
# that asked for the e-mail (`notification.sent.contact`), so each requester binds only its own.
ROUTED: dict[str, tuple[str, ...]] = {
    "notifier": tuple(
        outcome_routing_key(event_type, requester)
        for event_type in (NOTIFICATION_SENT, NOTIFICATION_FAILED)
        for requester in ("contact", "orders")
    ),
}
BINDS: dict[str, tuple[str, ...]] = {
    "contact": (
        "notification.failed.contact",
        "notification.sent.contact",
        "privacy.request.completed",
        "privacy.request.confirmed",
    ),
    "orders": (
        "notification.unsubscribed",
        "order.placed",
        "product.announced",
        "upgrade.released",
        "privacy.request.confirmed",
    ),
    "notifier": ("notification.requested", "privacy.request.confirmed"),
    "audit": ("#",),
    "console": (),
}
# Systems outside this project that publish to the exchange (CONTRACT section 3).
OUTSIDE_PUBLISHERS: dict[str, tuple[str, ...]] = {
    "shop": ("order.placed",),
    "releases": ("upgrade.released", "product.announced"),
    "logs": ("site.page.viewed",),
}
# The console's read-only look at the queues' depths (see the module's docstring); it publishes nothing.
MONITOR = "monitor"
USERS = (*WITH_SCHEMA, *OUTSIDE_PUBLISHERS, MONITOR)
NOTHING = "^$"


@dataclass(frozen=True)
class BrokerUser:
    """One user's permissions on the vhost (configure, write, read) and its topic permissions on `exchange`
    (none where `exchange` is empty); `tags` are its management API tags (none: it cannot use that API)."""

    name: str
    configure: str
    write: str
    read: str
    exchange: str
    topic_write: str
    topic_read: str
    tags: str = ""


def user_name(who: str, prefix: str = "spm_") -> str:
    return f"{prefix}{who}"


def broker_users(exchange: str, prefix: str = "spm_") -> list[BrokerUser]:
    """Every user of the system on `exchange`; `prefix` keeps test users apart (users are broker-wide)."""
    users = []
    for service in WITH_SCHEMA:
        topology = Topology(exchange, service)
        own = [topology.queue_name, topology.retry_queue_name, topology.dead_letter_queue_name]
        binds = BINDS[service]
        users.append(
            BrokerUser(
                name=user_name(service, prefix),
                # Bootstrap declares and binds everything (see the module's docstring).
                configure=NOTHING,
                write=_any_of(exchange, topology.requeue_exchange_name),
                read=_any_of(*own),
                exchange=exchange,
                topic_write=_any_of(*PUBLISHES[service], *ROUTED.get(service, ())),
                topic_read=".*" if "#" in binds else _any_of(*binds),
            )
        )
    for publisher, keys in OUTSIDE_PUBLISHERS.items():
        users.append(
            BrokerUser(
                name=user_name(publisher, prefix),
                configure=NOTHING,
                write=_any_of(exchange),
                read=NOTHING,
                exchange=exchange,
                topic_write=_any_of(*keys),
                topic_read=NOTHING,
            )
        )
    # Vhost access matching nothing: the management API then lists this vhost's queues (depths, consumers) to
    # it, and refuses every read, write and change of any of them.
    users.append(BrokerUser(user_name(MONITOR, prefix), NOTHING, NOTHING, NOTHING, "", NOTHING, NOTHING, "management"))
    return users


async def ensure_users(management_url: str, amqp_url: str, users: list[BrokerUser], passwords: dict[str, str]) -> None:
    """Create or update each user with its password and permissions on the vhost of `amqp_url`.

    `management_url` is the management HTTP API with an administrator's credentials in it
    (`http://admin:password@rabbitmq:15672`). Idempotent: every call sets the same state again."""
    api = management_api(management_url)
    vhost = vhost_of(amqp_url)
    async with httpx.AsyncClient(base_url=api.base_url, auth=api.auth, timeout=30) as client:
        for user in users:
            await _put(
                client,
                f"/api/users/{quote(user.name, safe='')}",
                {"password": passwords[user.name], "tags": user.tags},
            )
            await _put(
                client,
                f"/api/permissions/{vhost}/{quote(user.name, safe='')}",
                {"configure": user.configure, "write": user.write, "read": user.read},
            )
            if not user.exchange:
                continue
            await _put(
                client,
                f"/api/topic-permissions/{vhost}/{quote(user.name, safe='')}",
                {"exchange": user.exchange, "write": user.topic_write, "read": user.topic_read},
            )


class ManagementApi(NamedTuple):
    """The management HTTP API of a URL holding a login (`http://user:password@rabbitmq:15672`), split into
    its address and the login, so the password never shows in a logged or raised URL."""

    base_url: str
    auth: tuple[str, str]


def management_api(url: str) -> ManagementApi:
    parts = urlsplit(url)
    auth = (unquote(parts.username or ""), unquote(parts.password or ""))
    return ManagementApi(urlunsplit((parts.scheme, _host_port(parts), parts.path.rstrip("/"), "", "")), auth)


def vhost_of(amqp_url: str) -> str:
    """The vhost of an AMQP URL, quoted for a management API path (`%2F` for the default one)."""
    return quote(unquote(urlsplit(amqp_url).path[1:]) or "/", safe="")


def with_credentials(amqp_url: str, user: str, password: str) -> str:
    parts = urlsplit(amqp_url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{_host_port(parts)}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def _put(client: httpx.AsyncClient, path: str, body: dict[str, str]) -> None:
    response = await client.put(path, json=body)
    if response.status_code not in (200, 201, 204):
        # The path names the user; the body (a password) is never shown.
        raise RuntimeError(f"RabbitMQ management API refused PUT {path}: {response.status_code}")


def _host_port(parts: object) -> str:
    host = getattr(parts, "hostname", None) or ""
    if ":" in host:
        host = f"[{host}]"
    port = getattr(parts, "port", None)
    return f"{host}:{port}" if port else host


def _any_of(*names: str) -> str:
    """A regular expression matching exactly these names (nothing when there are none)."""
    if not names:
        return NOTHING
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"
