"""The operations pages: deliveries (the notifier's failed and pending e-mails, retry, the suppression list),
privacy requests (the queue with its deadlines, the one extension), and the system's state (admin).

As everywhere in the console, each view and each action is recorded (`operator.action`) before it happens,
and the services are told which operator acts (`X-SPM-Operator`), so they keep it with the change.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any  # for a template's context: whatever its template shows

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import Response

from console import i18n
from console.api import AdminDep, OperatorDep, checked_form, field, record, render, see_other, state_of
from console.ops_upstream import AuditCheck, DeadLetter, PrivacyRequest, ServiceQueues
from console.store import SessionRow
from console.upstream import UpstreamError

ops_pages = APIRouter(include_in_schema=False)
# The services whose state the system page shows, in this order.
SERVICES = ("contact", "orders", "notifier", "audit")
REASON_MAX = 1000
RecipientRef = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[0-9a-f]+$")]
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Notice = Annotated[str | None, Query(max_length=40)]


def _notice(value: str | None) -> str | None:
    return value if value in i18n.TEXTS else None


# Deliveries


@ops_pages.get("/deliveries")
async def deliveries(request: Request, session: OperatorDep, notice: Notice = None) -> Response:
    return await _deliveries_page(request, session, notice=_notice(notice))


async def _deliveries_page(request: Request, session: SessionRow, status_code: int = 200, **context: Any) -> Response:
    console = state_of(request)
    operator = session.operator.email
    await record(request, session, "deliveries.listed", "notifier.deliveries")
    failed, pending, suppressed = await asyncio.gather(
        console.notifier.deliveries(operator, "failed"),
        console.notifier.deliveries(operator, "pending"),
        console.notifier.suppressions(operator),
    )
    failed.sort(key=lambda d: d.failed_at or d.created_at, reverse=True)
    return render(
        request,
        "deliveries.html",
        status_code,
        failed=failed,
        pending=pending,
        suppressed=suppressed,
        retryable=sum(1 for d in failed if d.retryable),
        **context,
    )


@ops_pages.post("/deliveries/retry")
async def retry_all(request: Request, session: OperatorDep) -> Response:
    console = state_of(request)
    await checked_form(request, session)
    await record(request, session, "deliveries.retried", "notifier.deliveries")
    await console.notifier.retry_all(session.operator.email)
    return see_other("/deliveries?notice=deliveries_retried")


@ops_pages.post("/deliveries/{delivery_id}/retry")
async def retry_one(request: Request, session: OperatorDep, delivery_id: DeliveryId) -> Response:
    console = state_of(request)
    await checked_form(request, session)
    await record(request, session, "delivery.retried", f"notifier.delivery:{delivery_id}")
    try:
        await console.notifier.retry(session.operator.email, delivery_id)
    except UpstreamError as exc:
        if exc.status != status.HTTP_409_CONFLICT:
            raise
        return await _deliveries_page(request, session, 409, error="delivery_not_retryable")
    return see_other("/deliveries?notice=delivery_retried")


@ops_pages.post("/suppressions/{recipient_ref}/remove")
async def remove_suppression(request: Request, session: AdminDep, recipient_ref: RecipientRef) -> Response:
    console = state_of(request)
    form = await checked_form(request, session)
    reason = field(form, "reason").strip()
    if not reason or len(reason) > REASON_MAX:
        return await _deliveries_page(request, session, 422, error="reason_required")
    await record(request, session, "suppression.removed", f"notifier.recipient:{recipient_ref}")
    await console.notifier.remove_suppression(session.operator.email, recipient_ref, reason)
    return see_other("/deliveries?notice=suppression_removed")


# Privacy requests


def _urgency(r: PrivacyRequest) -> tuple[int, datetime]:
    """Overdue first, then late, then the others in progress, by deadline; the completed ones last."""
    if r.status == "completed":
        rank = 4
    elif r.overdue:
        rank = 0
    elif r.late:
        rank = 1
    else:
        rank = 2
    return rank, r.due_at


@ops_pages.get("/privacy")
async def privacy(request: Request, session: OperatorDep, notice: Notice = None) -> Response:
    return await _privacy_page(request, session, notice=_notice(notice))


async def _privacy_page(request: Request, session: SessionRow, status_code: int = 200, **context: Any) -> Response:
    console = state_of(request)
    await record(request, session, "privacy_requests.listed", "contact.privacy_requests")
    found = sorted(await console.privacy.requests(session.operator.email), key=_urgency)
    return render(request, "privacy.html", status_code, requests=found, now=datetime.now(UTC), **context)


@ops_pages.post("/privacy/{request_id}/extension")
async def extend(request: Request, session: OperatorDep, request_id: uuid.UUID) -> Response:
    console = state_of(request)
    form = await checked_form(request, session)
    reason = field(form, "reason").strip()
    if not reason or len(reason) > REASON_MAX:
        return await _privacy_page(request, session, 422, error="reason_required")
    await record(request, session, "privacy_request.extended", f"contact.privacy_request:{request_id}")
    try:
        await console.privacy.extend(session.operator.email, request_id, reason)
    except UpstreamError as exc:
        if exc.status != status.HTTP_409_CONFLICT:
            raise
        return await _privacy_page(request, session, 409, error="extension_refused")
    return see_other("/privacy?notice=extension_recorded")


# Dead letters


ServiceName = Annotated[str, Path(pattern=r"^(contact|orders|notifier|audit)$")]
MessageId = Annotated[str, Path(min_length=1, max_length=200)]


@ops_pages.get("/dead-letters")
async def dead_letters(request: Request, session: AdminDep, notice: Notice = None) -> Response:
    console = state_of(request)
    await record(request, session, "dead_letters.listed", "console.dead_letters")
    operator = session.operator.email

    async def of(name: str) -> tuple[str, list[DeadLetter] | None]:
        try:
            return name, await console.dead_letters[name].list(operator)
        except UpstreamError:
            return name, None  # shown as "did not answer"; the other services' lists still show

    found = await asyncio.gather(*(of(name) for name in SERVICES))
    return render(request, "dead_letters.html", services=found, notice=_notice(notice))


@ops_pages.post("/dead-letters/{service}/replay")
async def replay_dead_letters(request: Request, session: AdminDep, service: ServiceName) -> Response:
    console = state_of(request)
    await checked_form(request, session)
    await record(request, session, "dead_letters.replayed", f"{service}.dead_letters")
    await console.dead_letters[service].replay(session.operator.email, None)
    return see_other("/dead-letters?notice=dead_letters_replayed")


@ops_pages.post("/dead-letters/{service}/{message_id}/replay")
async def replay_dead_letter(
    request: Request, session: AdminDep, service: ServiceName, message_id: MessageId
) -> Response:
    console = state_of(request)
    await checked_form(request, session)
    await record(request, session, "dead_letter.replayed", f"{service}.dead_letter:{message_id}")
    await console.dead_letters[service].replay(session.operator.email, message_id)
    return see_other("/dead-letters?notice=dead_letter_replayed")


# The system


@ops_pages.get("/system")
async def system(request: Request, session: AdminDep) -> Response:
    console = state_of(request)
    await record(request, session, "system.viewed", "console.system")

    async def verified() -> AuditCheck | None:
        try:
            return await console.trail.verify(session.operator.email)
        except UpstreamError:
            return None  # said so on the page; the rest still shows

    async def queues() -> list[ServiceQueues] | None:
        if not console.queues.configured:
            return None
        try:
            return list(await asyncio.gather(*(console.queues.of(name) for name in SERVICES)))
        except UpstreamError:
            return None

    states, audit, depths = await asyncio.gather(
        asyncio.gather(*(console.probes.state(name) for name in SERVICES)),
        verified(),
        queues(),
    )
    return render(
        request,
        "system.html",
        services=list(states),
        audit=audit,
        queues=depths,
        queues_configured=console.queues.configured,
        checked_at=datetime.now(UTC),
    )
