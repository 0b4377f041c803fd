"""Deliveries: recorded when a request arrives, then leased, sent and marked by the sender.

Recording (the `notification.requested` handler) runs in the consumer's inbox transaction and only writes
rows. The sender leases a batch of due deliveries ('sending' with a lease expiry, committed at once, so no
transaction or row lock is held while SMTP talks), checks consent in the same short transaction, hands
the e-mails to a few persistent SMTP connections, and commits the outcomes in small groups as they come
(at most every `SPM_NOTIFIER_COMMIT_INTERVAL_SECONDS`). A sender that dies leaves its leases to expire;
the deliveries are then due again and go out with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from email_validator import EmailNotValidError, validate_email
from prometheus_client import Counter, Gauge
from spm_common import outbox
from spm_common.addresses import is_plain_address
from spm_common.consumer import PermanentError
from spm_common.db import DB_ERRORS, Connection
from spm_common.envelope import OutboxRow, Purpose, new_event_body
from spm_common.handlers import Meta, Received
from spm_common.health import Health
from spm_common.logging import bound_contextvars, get_logger
from spm_common.notifications import (
    NOTIFICATION_FAILED,
    NOTIFICATION_SENT,
    NotificationRequested,
    outcome_routing_key,
)
from spm_common.pgnotify import Listener
from spm_common.redaction import describe_error

from notifier import store
from notifier.mail import (
    Composer,
    FileAttachment,
    Outgoing,
    RenderError,
    Unsubscribe,
    stable_message_id,
    usable_message_id,
)
from notifier.policy import (
    CATEGORY_OF,
    PURCHASER_ONLY,
    REQUESTER_OF,
    Publishers,
    RecipientFacts,
    check_request,
    refusal,
    requester_refusal,
)
from notifier.settings import Settings
from notifier.smtp import Connection as SmtpConnection
from notifier.smtp import RateLimiter, Result
from notifier.tokens import make_token, recipient_ref

log = get_logger(__name__)

# Purposes whose consent depends on what is known of the recipient: the claim brings those facts along.
GATED = sorted(PURCHASER_ONLY | CATEGORY_OF.keys())
DELIVERIES = Counter("spm_notifier_deliveries_total", "Delivery attempts by outcome", ["outcome"])
# Read from the table at scrape time (`refresh_gauges`), so nothing is counted on the way of an e-mail.
BY_STATUS = Gauge(
    "spm_notifier_deliveries_by_status", "Deliveries now pending, sending or failed (sent: see the counter)", ["status"]
)
OLDEST_WAITING = Gauge(
    "spm_notifier_oldest_pending_seconds", "Age of the oldest delivery not yet sent or failed (0: none waits)"
)
RELEASE = Result("retry")  # a claimed delivery handed back unsent (shutdown, or its lease ran short)
MAX_CONNECTION_PAUSE_SECONDS = 2.0
# While the SMTP server refuses us, it is asked this often (at most) whether it lets us in again, so readiness
# recovers once it does even when the deliveries' own retries are an hour away.
SMTP_PROBE_SECONDS = 10.0


# --- recording ------------------------------------------------------------------------------------------


async def record(
    conn: Connection,
    requests: Sequence[Received[NotificationRequested]],
    settings: Settings,
    publishers: Publishers,
) -> None:
    """Handler of notification.requested, batched: one delivery per (event, recipient), pending or refused at
    once, for every event of the consumer's batch in one statement (one more for the outcomes of refused
    requests). A request from a service that may not ask for its purpose, or published by another RabbitMQ
    user than that service's (`publishers`), raises, and the consumer then takes the batch one event at a
    time, so only that one is dead-lettered (with the reason); one that does not validate never gets here."""
    key = settings.recipient_key()
    new: list[store.NewDelivery] = []
    purchasers: list[str] = []
    by_key: dict[tuple[str, str], tuple[Meta, NotificationRequested, str | None]] = {}
    for request, event in requests:
        not_allowed = requester_refusal(event.source, request.purpose) or publishers.refusal(
            event.source, event.publisher
        )
        if not_allowed is not None:
            raise PermanentError(not_allowed)
        ref = recipient_ref(request.recipient.email, key)
        message_id = usable_message_id(request.message_id) or stable_message_id(
            f"{event.source}|{event.id}|{ref}", settings.mail_from
        )
        problem = check_request(request.template, request.purpose, request.context) or _address_problem(
            request.recipient.email
        )
        if request.purpose == "fulfil-order" and problem is None:
            purchasers.append(ref)
        by_key.setdefault((event.id, ref), (event, request, problem))
        new.append(
            store.NewDelivery(
                request_event_id=event.id,
                recipient_ref=ref,
                purpose=request.purpose,
                template=request.template,
                locale=request.locale,
                reference=request.reference,
                message_id=message_id,
                correlation_id=event.correlationid,
                request=None if problem else request.model_dump_json(),
                status="failed" if problem else "pending",
                last_error=problem,
            )
        )
    inserted = await store.insert_deliveries(conn, new, purchasers)
    refused: list[OutboxRow] = []
    for inserted_key in inserted:
        event, request, problem = by_key[inserted_key]
        if problem is None:
            continue
        with bound_contextvars(event_id=event.id, correlation_id=event.correlationid):
            log.warning("notification request refused", template=request.template, error=problem)
        refused.append(
            _outcome(
                settings.source,
                event.id,
                request.reference,
                request.purpose,
                request.template,
                problem,
                event.correlationid,
            )
        )
    if refused:
        DELIVERIES.labels("refused").inc(len(refused))
        await outbox.add_many(conn, refused)


def _address_problem(email: str) -> str | None:
    if is_plain_address(email):
        return None
    try:
        validate_email(email, check_deliverability=False, allow_smtputf8=False, allow_display_name=False)
    except EmailNotValidError:
        return "recipient address is not a deliverable e-mail address"
    return None


def _outcome(
    source: str,
    request_event_id: str,
    reference: str | None,
    purpose: Purpose,
    template: str,
    error: str | None,
    correlation_id: str | None,
) -> OutboxRow:
    """notification.sent or notification.failed, as `new_event` makes it of a `NotificationOutcome` (a test holds
    them equal) but without building and validating the two models: one for every e-mail sent."""
    event_type = NOTIFICATION_FAILED if error else NOTIFICATION_SENT
    data = {
        "request_event_id": request_event_id,
        "reference": reference,
        "purpose": purpose,
        "template": template,
        "status": "failed" if error else "sent",
        "error": error,
    }
    requester = REQUESTER_OF.get(purpose)
    return new_event_body(
        event_type,
        source,
        data,
        purpose=purpose,
        correlation_id=correlation_id,
        routing_key=outcome_routing_key(event_type, requester) if requester else None,
    )


async def refresh_gauges(pool: asyncpg.Pool) -> None:
    """The deliveries' gauges, from the table (a scrape hook of /metrics)."""
    async with pool.acquire() as conn:
        backlog = await store.backlog(conn)
    for status, count in backlog.by_status.items():
        BY_STATUS.labels(status).set(count)
    OLDEST_WAITING.set(backlog.oldest_waiting_seconds)


# --- sending --------------------------------------------------------------------------------------------


@dataclass
class Job:
    id: int
    attempts: int
    request_event_id: str
    recipient_ref: str
    purpose: Purpose  # as recorded, after the request's model had checked it
    template: str
    locale: str
    reference: str | None
    message_id: str
    correlation_id: str | None
    request: dict[str, Any]  # the NotificationRequested JSON as stored, validated when it came
    deadline: float  # loop time after which it is not started: its lease would run out under way


def backoff_seconds(attempts: int, base: float, ceiling: float) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(attempts-1), capped."""
    delay = min(ceiling, base * 2.0 ** max(0, attempts - 1))
    return delay / 2 + random.uniform(0, delay / 2)


class Sender:
    """Claims due deliveries, sends them over persistent SMTP connections, commits outcomes in small groups."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        composer: Composer | None = None,
        health: Health | None = None,
    ) -> None:
        self._pool = pool
        self._s = settings
        health = health or Health(settings.service)
        # The SMTP server's state as the sends see it: refused every time for SPM_NOTIFIER_SMTP_UNREADY_SECONDS
        # makes the service unready (with the server's reason), so a notifier sending nothing is never green.
        self._smtp = health.loop("smtp", unready_after=settings.notifier_smtp_unready_seconds)
        self._claiming = health.loop("delivery-claim")
        self._marking = health.loop("delivery-marker")
        self._composer = composer or Composer(settings.mail_from)
        self._key = settings.recipient_key()
        # Worked out once: the mailbox alone (an address parse) cost as much as rendering an e-mail's subject.
        self._unsubscribe_url = f"{settings.notifier_public_url.rstrip('/')}/v1/unsubscribe?token="
        self._unsubscribe_mailto = f"mailto:{settings.unsubscribe_mailbox}?subject=unsubscribe%20"
        self._connections = [SmtpConnection(settings) for _ in range(settings.notifier_smtp_connections)]
        self._limiter = RateLimiter(settings.notifier_rate_limit)
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self._need_more = asyncio.Event()
        self._results: list[tuple[Job, Result]] = []
        self._results_ready = asyncio.Event()
        batch = settings.notifier_batch_size
        if settings.notifier_rate_limit:
            # Never lease more than the rate limit lets out well within the lease.
            batch = max(1, min(batch, int(settings.notifier_rate_limit * settings.notifier_lease_seconds / 4)))
        self._batch = batch
        self._low_water = max(batch // 2, len(self._connections))

    async def run(self) -> None:
        listener = Listener(self._s.role_database_url(), store.DUE_CHANNEL)
        workers = [asyncio.create_task(self._work(c), name="smtp-worker") for c in self._connections]
        marker = asyncio.create_task(self._mark_loop(), name="delivery-marker")
        probe = asyncio.create_task(self._probe_loop(), name="smtp-probe")
        loop = asyncio.get_running_loop()
        housekeeping_at = 0.0
        backoff = 0.5
        try:
            while True:
                try:
                    await listener.ensure()
                    if loop.time() >= housekeeping_at:
                        await self._housekeeping()
                        housekeeping_at = loop.time() + min(self._s.notifier_lease_seconds / 2, 30.0)
                    await self._fill()
                    self._claiming.ok()
                    backoff = 0.5
                except DB_ERRORS as exc:
                    self._claiming.failed(describe_error(exc), backoff=backoff)
                    await listener.close()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                await listener.wait(self._s.notifier_poll_seconds)
        finally:
            probe.cancel()
            await asyncio.wait([probe])
            await self._shut_down(workers, marker)
            await listener.close()

    async def _probe_loop(self) -> None:
        every = min(SMTP_PROBE_SECONDS, self._s.notifier_smtp_unready_seconds / 4)
        while True:
            await asyncio.sleep(every)
            if not self._smtp.failing:
                continue
            try:
                result = await SmtpConnection(self._s).check()
            except Exception as exc:  # a bug here must not end the probe: readiness would never come back
                result = Result("retry", f"internal error: {describe_error(exc)}", connection_failed=True)
            if result.connection_failed:
                self._smtp.failed(result.error or "refused", probe=True)
            else:
                self._smtp.ok()

    async def _housekeeping(self) -> None:
        async with self._pool.acquire() as conn:
            released = await store.release_expired_leases(conn)
            erased = await store.erase_expired_requests(conn, self._s.notifier_failed_retention_days)
        if released:
            # The sender that held them stopped mid-send: any of them may have left; same Message-ID again.
            log.warning("expired leases released", count=released)
        if erased:
            log.info("requests of old failed deliveries erased", count=erased)

    async def _fill(self) -> None:
        """Keep the workers' queue stocked while deliveries are due."""
        while True:
            if self._queue.qsize() > self._low_water:
                self._need_more.clear()
                await self._need_more.wait()
                continue
            jobs = await self._claim()
            for job in jobs:
                self._queue.put_nowait(job)
            if len(jobs) < self._batch:
                return

    async def _claim(self) -> list[Job]:
        deadline = asyncio.get_running_loop().time() + self._s.notifier_lease_seconds / 2
        async with self._pool.acquire() as conn:
            rows = await store.claim_due(conn, self._batch, self._s.notifier_lease_seconds, GATED)
        jobs: list[Job] = []
        refused: list[tuple[Job, str]] = []
        for row in rows:
            job = Job(
                id=row["id"],
                attempts=row["attempts"],
                request_event_id=row["request_event_id"],
                recipient_ref=row["recipient_ref"],
                purpose=row["purpose"],
                template=row["template"],
                locale=row["locale"],
                reference=row["reference"],
                message_id=row["message_id"],
                correlation_id=row["correlation_id"],
                request=orjson.loads(row["request"]) if row["request"] else {},
                deadline=deadline,
            )
            facts = RecipientFacts(row["purchaser"], row["suppressed"], frozenset(row["unsubscribed"]))
            reason = refusal(job.purpose, facts, job.reference)
            if reason is None and not job.request:
                reason = "nothing left to send: the request was erased"
            if reason:
                refused.append((job, reason))
            else:
                jobs.append(job)
        if refused:
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    failed = [store.Failed(j.id, j.attempts, r, False) for j, r in refused]
                    done = set(await store.mark_failed(conn, failed))
                    await outbox.add_many(conn, [self._outcome(j, r) for j, r in refused if j.id in done])
                DELIVERIES.labels("refused").inc(len(done))
            except DB_ERRORS as exc:  # they stay leased: once the leases run out, a claim refuses them again
                log.warning("cannot record refused deliveries yet", error=describe_error(exc), count=len(refused))
        return jobs

    def _compose(self, job: Job) -> Outgoing:
        recipient = job.request["recipient"]
        category = CATEGORY_OF.get(job.purpose)
        unsubscribe = None
        if category is not None:
            token = make_token(recipient["email"], category, self._key)
            unsubscribe = Unsubscribe(
                url=self._unsubscribe_url + token, mailto=self._unsubscribe_mailto + token, category=category
            )
        return self._composer.compose(
            template=job.template,
            locale=job.locale,
            email=recipient["email"],
            name=recipient.get("name"),
            context=job.request.get("context") or {},
            message_id=job.message_id,
            in_reply_to=job.request.get("in_reply_to"),
            unsubscribe=unsubscribe,
            attachments=[
                FileAttachment(a["filename"], a["content_type"], a["content"])
                for a in job.request.get("attachments") or ()
            ],
        )

    async def _work(self, connection: SmtpConnection) -> None:
        loop = asyncio.get_running_loop()
        pause = 0.0
        try:
            while True:
                job = await self._queue.get()
                if self._queue.qsize() <= self._low_water:
                    self._need_more.set()
                if job is None:
                    return
                if loop.time() > job.deadline:
                    self._done(job, RELEASE)
                    continue
                try:
                    outgoing = self._compose(job)
                    await self._limiter.acquire()
                    result = await connection.send(outgoing.sender, outgoing.recipient, outgoing.data)
                    del outgoing  # the body (license keys, reply text) lives no longer than the send
                    if result.connection_failed:
                        self._smtp.failed(result.error or "connection failed")
                    else:  # the server let us in and answered (even a refusal of this one message)
                        self._smtp.ok()
                except RenderError as exc:
                    result = Result("failed", str(exc))
                except Exception as exc:
                    # A bug, not the request's fault: the delivery is tried again (and fails visibly after
                    # SPM_NOTIFIER_MAX_ATTEMPTS); the worker lives on, so the queue never stops draining.
                    log.error("cannot send the e-mail; will retry", delivery_id=job.id, error=describe_error(exc))
                    result = Result("retry", f"internal error: {describe_error(exc)}")
                    await connection.close()
                self._done(job, result)
                if result.connection_failed:
                    # The server is away or refusing us: don't burn every queued delivery's attempt at once.
                    pause = min(max(pause * 2, 0.1), MAX_CONNECTION_PAUSE_SECONDS)
                    await asyncio.sleep(pause)
                else:
                    pause = 0.0
        finally:
            await connection.close()

    def _done(self, job: Job, result: Result) -> None:
        self._results.append((job, result))
        self._results_ready.set()

    async def _mark_loop(self) -> None:
        while True:
            await self._results_ready.wait()
            await asyncio.sleep(self._s.notifier_commit_interval_seconds)
            await self._flush()

    async def _flush(self) -> None:
        backoff = 0.2
        while self._results:
            results, self._results = self._results, []
            self._results_ready.clear()
            try:
                await self._commit(results)
                self._marking.ok()
            except asyncio.CancelledError:
                # Committed or not, they go back: marking is conditional on the lease, so twice is harmless.
                self._results = results + self._results
                raise
            except DB_ERRORS as exc:
                # Keep them: these e-mails left (or failed) and must be recorded before anything else.
                self._marking.failed(describe_error(exc), count=len(results))
                self._results = results + self._results
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _commit(self, results: list[tuple[Job, Result]]) -> None:
        s = self._s
        sent: list[Job] = []
        retry: list[tuple[Job, float, str | None]] = []
        failed: list[tuple[Job, str, bool]] = []
        bounced: list[tuple[str, str]] = []
        for job, result in results:
            if result is RELEASE:
                retry.append((job, 0.0, None))
            elif result.verdict == "sent":
                sent.append(job)
            elif result.verdict == "retry":
                if job.attempts >= s.notifier_max_attempts:
                    failed.append((job, f"gave up after {job.attempts} attempts: {result.error}", True))
                else:
                    delay = backoff_seconds(job.attempts, s.notifier_retry_base_seconds, s.notifier_retry_max_seconds)
                    retry.append((job, delay, result.error))
            else:
                failed.append((job, result.error or "failed", True))
                if result.verdict == "bounced":
                    bounced.append((job.recipient_ref, result.error or "hard bounce"))
        by_id = {job.id: job for job, _ in results}
        errors = {job.id: error for job, error, _ in failed}
        marked = [store.Sent(j.id, j.attempts, self._outcome(j, None)) for j in sent]
        if not (retry or failed or bounced):
            # Nearly always: one statement, atomic on its own, without a transaction to open and commit.
            async with self._pool.acquire() as conn:
                done = await store.mark_sent(conn, marked)
            DELIVERIES.labels("sent").inc(len(done))
            return
        async with self._pool.acquire() as conn, conn.transaction():
            events: list[OutboxRow] = []
            if sent:
                done = await store.mark_sent(conn, marked)
                DELIVERIES.labels("sent").inc(len(done))
            if retry:
                await store.mark_retry(conn, [store.Retry(j.id, j.attempts, d, e) for j, d, e in retry])
                DELIVERIES.labels("retry").inc(len(retry))
            if failed:
                done = await store.mark_failed(conn, [store.Failed(j.id, j.attempts, e, keep) for j, e, keep in failed])
                events += [self._outcome(by_id[i], errors[i]) for i in done]
                DELIVERIES.labels("failed").inc(len(done))
            if bounced:
                await store.suppress(conn, bounced)
            await outbox.add_many(conn, events)
        # One line per delivery that did not go (never its address: the reason is a redacted server reply).
        for job, delay, error in retry:
            if error is not None:  # None: handed back unsent, not tried
                log.warning(
                    "delivery will be retried",
                    delivery_id=job.id,
                    attempt=job.attempts,
                    error=error,
                    retry_in_seconds=round(delay, 1),
                    template=job.template,
                    correlation_id=job.correlation_id,
                )
        for job, error, _ in failed:
            log.warning(
                "delivery failed",
                delivery_id=job.id,
                attempt=job.attempts,
                error=error,
                template=job.template,
                correlation_id=job.correlation_id,
            )

    def _outcome(self, job: Job, error: str | None) -> OutboxRow:
        return _outcome(
            self._s.source, job.request_event_id, job.reference, job.purpose, job.template, error, job.correlation_id
        )

    async def _shut_down(self, workers: list[asyncio.Task[None]], marker: asyncio.Task[None]) -> None:
        """Hand back what was not started, let the sends under way finish, and record every outcome."""
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if job is not None:
                self._done(job, RELEASE)
        for _ in workers:
            self._queue.put_nowait(None)
        _, late = await asyncio.wait(workers, timeout=self._s.smtp_timeout_seconds + 1)
        for task in late:
            task.cancel()
        marker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await marker
        with contextlib.suppress(*DB_ERRORS, TimeoutError):
            async with asyncio.timeout(5):
                await self._flush()
