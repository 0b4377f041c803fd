"""HTTP routes of the audit service: the page-view beacon, trends, and the operators' view of the trail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

# Loosely typed: these routes answer JSON built here, with no response model (one would change the published OpenAPI).
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from spm_common.clientaddr import Network, of_request
from spm_common.http import BAD_BODY, OPERATOR_ONLY, Operator, RuntimeDep, direct, json_body, validated_body
from spm_common.inputs import EARLIEST_DAY, LATEST_DAY, DayOrTime, DbBigInt
from spm_common.inputs import BoundedDate as Day

from audit import privacy_answer, trail, trends
from audit.pageviews import (
    PAGE_VIEWS,
    PageViewsUnavailable,
    PageViewWriter,
    normalise_path,
    raw_view,
)
from audit.store import find_entries


@dataclass(frozen=True)
class AuditState:
    """What the routes need beyond the runtime: the audit secret (finds subject keys), the trusted proxies, the
    page-view writer, the public keys whose checkpoints are trusted."""

    key: bytes
    trusted_proxies: list[Network]
    writer: PageViewWriter
    checkpoint_keys: frozenset[str] = frozenset()


async def state_of(request: Request) -> AuditState:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a cost on every beacon request
    state: AuditState = request.app.state.audit
    return state


StateDep = Annotated[AuditState, Depends(state_of)]

pageviews_router = APIRouter(prefix="/v1", tags=["page views"])
operator_router = APIRouter(prefix="/v1", tags=["operators"], responses=OPERATOR_ONLY)


class PageViewIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str = Field(min_length=1, max_length=4096, description="the page viewed: absolute URL or path")
    referrer: str | None = Field(default=None, max_length=4096, description="document.referrer, if any")


# The 422 of a `url` that is neither an http(s) URL nor a path (checked where the path is made, once).
NOT_A_PAGE = {"loc": ("body", "url"), "msg": "Value error, must be an http(s) URL or a path", "type": "value_error"}


class Accepted(BaseModel):
    status: str = "accepted"


ACCEPTED_BODY = Accepted().model_dump_json().encode()


@pageviews_router.post(
    "/pageviews",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    summary="Count a page view (the client address and user agent come from the request)",
    responses={
        **BAD_BODY,
        422: {"description": "the body is not a valid page view"},
        503: {"description": "the view could not be stored; it may be sent again"},
    },
    openapi_extra={"requestBody": json_body(PageViewIn)},
)
# The busiest route: no FastAPI machinery per request (so the body is validated here, same 422), and no access
# line per successful view (counted in the latency metric): a line each would be most of the log.
@direct(access_log=False)
async def post_pageview(request: Request) -> Response:
    """Counted once stored (202). Not counted, still 202: known bots, and requests without a usable client
    address. Nothing of the address or the user agent is kept but a daily visitor hash."""
    body = validated_body(PageViewIn, None, await request.body(), any_content_type=True)
    path = normalise_path(body.url)
    if path is None:
        raise RequestValidationError([NOT_A_PAGE])
    state: AuditState = request.app.state.audit
    address = of_request(request, state.trusted_proxies)
    view = raw_view(path, body.url, body.referrer, address, request.headers.get("user-agent"), datetime.now(UTC))
    if view is None:
        PAGE_VIEWS.labels("http", "not_counted").inc()
        return _accepted()
    try:
        await state.writer.submit(view)
    except PageViewsUnavailable:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "page views cannot be stored now") from None
    return _accepted()


def _accepted() -> Response:
    # Written once, not serialised through the response model on every beacon request.
    return Response(ACCEPTED_BODY, status.HTTP_202_ACCEPTED, media_type="application/json")


def _day_range(first: date | None, last: date | None) -> tuple[date, date]:
    # Each day given is within EARLIEST_DAY..LATEST_DAY (BoundedDate); the default `from` may not be.
    last = last or datetime.now(UTC).date()
    first = first or last - timedelta(days=29)
    if first < EARLIEST_DAY:
        raise _bad_query("from", f"a day from {EARLIEST_DAY} to {LATEST_DAY}")
    if first > last:
        raise _bad_query("from", "`from` is after `to`")
    if (last - first).days >= trends.MAX_DAYS:
        raise _bad_query("from", f"at most {trends.MAX_DAYS} days at a time")
    return first, last


def _bad_query(name: str, message: str) -> RequestValidationError:
    """A 422 shaped as every other 422 of the API (the documented `HTTPValidationError`), naming the parameter."""
    return RequestValidationError([{"loc": ("query", name), "msg": message, "type": "value_error"}])


@operator_router.get("/trends", summary="Page views, unique visitors, top pages and referrers, visits")
async def get_trends(
    _: Operator,
    runtime: RuntimeDep,
    first: Annotated[Day | None, Query(alias="from", description="first UTC day (default: `to` - 29 days)")] = None,
    last: Annotated[Day | None, Query(alias="to", description="last UTC day, included (default: today)")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    first, last = _day_range(first, last)
    async with runtime.pool.acquire() as conn:
        return await trends.trends(conn, first, last, limit)


def _moment(value: date | datetime | None, *, end: bool) -> datetime | None:
    """A day means the whole day: `from` its start, `to` its end (a time is already aware: DayOrTime)."""
    if value is None or isinstance(value, datetime):
        return value
    # LATEST_DAY leaves room for the day after it.
    return datetime.combine(value + timedelta(days=1) if end else value, time(), UTC)


@operator_router.get("/audit/events", summary="The audit trail, filtered by type, time and the person it concerns")
async def get_events(
    _: Operator,
    runtime: RuntimeDep,
    state: StateDep,
    event_type: Annotated[str | None, Query(alias="type", max_length=200)] = None,
    email: Annotated[
        str | None, Query(max_length=254, description="turned into the pseudonymous reference, never stored")
    ] = None,
    since: Annotated[DayOrTime | None, Query(alias="from", description="recorded at or after")] = None,
    until: Annotated[DayOrTime | None, Query(alias="to", description="recorded before (a day: included)")] = None,
    after: Annotated[DbBigInt, Query(ge=0, description="the `next` of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    async with runtime.pool.acquire() as conn:
        # The person's references: under their own key, and the legacy one for entries older than the keys.
        references = await privacy_answer.references(conn, email, state.key) if email else None
        rows = await find_entries(
            conn,
            event_type=event_type,
            subject_refs=references,
            since=_moment(since, end=False),
            until=_moment(until, end=True),
            after=after,
            limit=limit,
        )
    items = [
        {
            "seq": r["seq"],
            "event_id": r["event_id"],
            "type": r["event_type"],
            "source": r["source"],
            "time": r["event_time"],
            "purpose": r["purpose"],
            "subject_ref": r["subject_ref"],
            "data": orjson.loads(r["payload"]),
            "recorded_at": trail.timestamp(r["recorded_at"]),
            "prev_hash": r["prev_hash"],
            "hash": r["hash"],
        }
        for r in rows
    ]
    return {"items": items, "next": items[-1]["seq"] if len(items) == limit else None}


@operator_router.get("/audit/verify", summary="Prove the audit trail was not altered")
async def get_verify(
    _: Operator,
    runtime: RuntimeDep,
    state: StateDep,
    full: Annotated[bool, Query(description="walk the whole chain, not only what follows the last checkpoint")] = False,
) -> dict[str, Any]:
    async with runtime.pool.acquire() as conn:
        outcome = await trail.verify(conn, full=full, trusted=state.checkpoint_keys)
    return outcome.report()
