"""The operator APIs behind the console's operations pages, typed: the notifier's delivery log and suppression
list, the contact service's privacy requests, and each service's probes (/readyz, /metrics) and the audit
trail's verification for the system page."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal  # for parts of upstream JSON answers the pages only show
from urllib.parse import quote

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel
from spm_common.brokerusers import management_api, vhost_of
from spm_common.topology import Topology

from console.upstream import Api, UpstreamError

# The notifier answers at most this many a page; the console shows one page of each list.
LIST_LIMIT = 500


class FailedDelivery(BaseModel):
    id: int
    purpose: str
    template: str
    locale: str
    reference: str | None
    status: str
    attempts: int
    last_error: str | None
    operator_retries: int
    retried_by: str | None = None
    retryable: bool
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime
    failed_at: datetime | None


class Suppression(BaseModel):
    recipient_ref: str
    suppressed_at: datetime
    suppressed_reason: str | None


class Notifier(Api):
    """The notifier's delivery log and suppression list."""

    async def deliveries(self, operator: str, status: Literal["pending", "failed"]) -> list[FailedDelivery]:
        rows = await self._call("GET", "/v1/deliveries", operator, params={"status": status, "limit": LIST_LIMIT})
        return [FailedDelivery.model_validate(r) for r in rows]

    async def retry(self, operator: str, delivery_id: int) -> None:
        await self._call("POST", f"/v1/deliveries/{delivery_id}/retry", operator)

    async def retry_all(self, operator: str) -> int:
        return len((await self._call("POST", "/v1/deliveries/retry", operator))["retried"])

    async def suppressions(self, operator: str) -> list[Suppression]:
        rows = await self._call("GET", "/v1/suppressions", operator, params={"limit": LIST_LIMIT})
        return [Suppression.model_validate(r) for r in rows]

    async def remove_suppression(self, operator: str, ref: str, reason: str) -> None:
        await self._call("POST", f"/v1/suppressions/{ref}/remove", operator, json={"reason": reason})


class ServiceAnswer(BaseModel):
    service: str
    answered_at: datetime


class PrivacyRequest(BaseModel):
    id: uuid.UUID
    kind: str
    status: str
    locale: str
    received_at: datetime
    confirmed_at: datetime | None
    due_at: datetime
    extended_at: datetime | None
    extension_reason: str | None
    completed_at: datetime | None
    answered: list[ServiceAnswer]
    waiting_for: list[str]
    late: bool
    overdue: bool


class Privacy(Api):
    """The contact service's privacy requests (the address is not read: the queue does not need it)."""

    async def requests(self, operator: str) -> list[PrivacyRequest]:
        """The late ones (however old), and the newest; each once."""
        late = await self._call("GET", "/v1/privacy-requests", operator, params={"late": "true", "limit": LIST_LIMIT})
        newest = await self._call("GET", "/v1/privacy-requests", operator, params={"limit": LIST_LIMIT})
        found = {r["id"]: r for r in [*late["items"], *newest["items"]]}
        return [PrivacyRequest.model_validate(r) for r in found.values()]

    async def extend(self, operator: str, request_id: uuid.UUID, reason: str) -> None:
        await self._call("POST", f"/v1/privacy-requests/{request_id}/extension", operator, json={"reason": reason})


@dataclass(frozen=True)
class ServiceState:
    """What the system page shows of one service: None where the service did not say."""

    name: str
    ready: bool
    problems: list[str]
    outbox_backlog: float | None
    dead_lettered: float | None
    oldest_pending_seconds: float | None = None
    deliveries: dict[str, float] | None = None


class AuditCheck(BaseModel):
    ok: bool
    checked: int
    head: dict[str, Any]
    first_broken: dict[str, Any] | None = None


class DeadLetter(BaseModel):
    message_id: str | None
    type: str | None
    attempts: int | None
    reason: str | None
    failed_at: str | None


class DeadLetters(Api):
    """One service's dead letters (`/v1/dead-letters`, on every service that consumes)."""

    async def list(self, operator: str) -> list[DeadLetter]:
        rows = await self._call("GET", "/v1/dead-letters", operator, params={"limit": LIST_LIMIT})
        return [DeadLetter.model_validate(r) for r in rows]

    async def replay(self, operator: str, message_id: str | None) -> int:
        path = (
            "/v1/dead-letters/replay" if message_id is None else f"/v1/dead-letters/{quote(message_id, safe='')}/replay"
        )
        return int((await self._call("POST", path, operator))["replayed"])


class Trail(Api):
    """The audit service's verification of its hash chain (from the last signed checkpoint on)."""

    async def verify(self, operator: str) -> AuditCheck:
        return AuditCheck.model_validate(await self._call("GET", "/v1/audit/verify", operator))


class QueueDepth(BaseModel):
    """One queue as the management API counts it (its statistics lag by up to 5 s)."""

    name: str
    messages: int = 0
    messages_ready: int = 0
    messages_unacknowledged: int = 0
    consumers: int = 0


@dataclass(frozen=True)
class ServiceQueues:
    """A service's queue, its retry queue and its dead-letter queue; None: not declared (yet)."""

    service: str
    main: QueueDepth | None
    retry: QueueDepth | None
    dead_letters: QueueDepth | None


QUEUE_COLUMNS = "name,messages,messages_ready,messages_unacknowledged,consumers"


class Queues:
    """The queues' depths, from RabbitMQ's management API with the `spm_monitor` login, which may list them
    and nothing else (spm_common.brokerusers); without that URL, `configured` is False."""

    def __init__(self, monitor_url: str | None, amqp_url: str, exchange: str, timeout: float) -> None:
        self.exchange = exchange
        self.vhost = vhost_of(amqp_url)
        self.client: httpx.AsyncClient | None = None
        if monitor_url:
            api = management_api(monitor_url)
            self.client = httpx.AsyncClient(base_url=api.base_url, auth=api.auth, timeout=timeout)

    @property
    def configured(self) -> bool:
        return self.client is not None

    async def of(self, service: str) -> ServiceQueues:
        """Raises UpstreamError when the management API does not answer, or refuses the login."""
        topology = Topology(self.exchange, service)
        main, retry, dlq = [
            await self._queue(name)
            for name in (topology.queue_name, topology.retry_queue_name, topology.dead_letter_queue_name)
        ]
        return ServiceQueues(service, main, retry, dlq)

    async def _queue(self, name: str) -> QueueDepth | None:
        assert self.client is not None, "ask only when configured"
        try:
            answer = await self.client.get(
                f"/api/queues/{self.vhost}/{quote(name, safe='')}", params={"columns": QUEUE_COLUMNS}
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(0, "RabbitMQ management API did not answer") from exc
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise UpstreamError(answer.status_code, "RabbitMQ management API refused")
        return QueueDepth.model_validate(answer.json())

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


class Probes:
    """Each service's /readyz and /metrics (neither needs the token)."""

    def __init__(self, clients: dict[str, httpx.AsyncClient]) -> None:
        self.clients = clients

    async def state(self, name: str) -> ServiceState:
        client = self.clients[name]
        try:
            ready = await client.get("/readyz")
            body = ready.json() if ready.headers.get("content-type", "").startswith("application/json") else {}
            metrics = await client.get("/metrics")
        except httpx.HTTPError:
            return ServiceState(name, False, ["did not answer"], None, None)
        problems = [f"{k}: {v}" for k, v in body.items() if k not in ("status", "problems") and v is not True]
        problems += [str(p) for p in body.get("problems", [])] if isinstance(body.get("problems"), list) else []
        samples = _samples(metrics.text) if metrics.status_code == 200 else None
        if samples is None:
            return ServiceState(name, ready.status_code == 200, problems, None, None)
        mine = [s for s in samples if s.labels.get("service", name) == name]
        # The notifier's own gauges carry no service label: read them from the notifier only (in one test
        # process, every service's /metrics holds them).
        notifier = mine if name == "notifier" else []
        by_status = {s.labels["status"]: s.value for s in notifier if s.name == "spm_notifier_deliveries_by_status"}
        return ServiceState(
            name=name,
            ready=ready.status_code == 200,
            problems=problems,
            # A labelled counter has no sample until it counts: none yet is 0.
            outbox_backlog=_sum(mine, "spm_outbox_backlog") or 0.0,
            dead_lettered=_sum(mine, "spm_events_consumed_total", outcome="dead_lettered") or 0.0,
            oldest_pending_seconds=_sum(notifier, "spm_notifier_oldest_pending_seconds"),
            deliveries=by_status or None,
        )


@dataclass(frozen=True)
class _Sample:
    name: str
    labels: dict[str, str]
    value: float


def _samples(text: str) -> list[_Sample] | None:
    try:
        return [
            _Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
    except ValueError:
        return None


def _sum(samples: list[_Sample], name: str, **labels: str) -> float | None:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found) if found else None
