"""The audit trail and the site's trends (support and admin), read from the audit service's operator API.

Audit: the chain's state (`GET /v1/audit/verify`, on request) and the entries concerning one person, found by
address (`GET /v1/audit/events?email=`); looking a person up is itself an `operator.action`. Trends: page
views and unique visitors per day as a line chart drawn on the server (plain SVG, no script), and the top
pages, referrers, entry and exit pages and moves; the audit service folds every group seen by fewer than
k visitors into one row, shown as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

# Loosely typed: parts of the audit API's JSON answers that the pages only show (that API has no response models yet).
from typing import Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, Field

from console.api import OperatorDep, checked_form, record, render
from console.upstream import Api, UpstreamError

insight_pages = APIRouter(include_in_schema=False)
# The audit service's k (trends.MIN_VISITORS): groups seen by fewer visitors come folded into "other".
K_ANONYMITY = 5
OTHER = "other"
DEFAULT_DAYS = 30
MAX_DAYS = 366
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 720, 260, 40


class Verification(BaseModel):
    ok: bool
    checked: int
    full: bool
    head: dict[str, Any]
    first_broken: dict[str, Any] | None = None

    @property
    def checkpoint_seq(self) -> int:
        """Where the last checkpoint stands: the walk started after it (a full walk starts at 0)."""
        return 0 if self.full else max(int(self.head.get("seq") or 0) - self.checked, 0)


class Entry(BaseModel):
    seq: int
    type: str
    source: str
    time: datetime | None = None
    recorded_at: str
    data: dict[str, Any]

    @property
    def data_text(self) -> str:
        return orjson.dumps(self.data).decode()


class Day(BaseModel):
    day: date
    views: int
    visitors: int


class Trends(BaseModel):
    first: date = Field(alias="from")
    last: date = Field(alias="to")
    days: list[Day]
    views: int
    top_pages: list[dict[str, Any]]
    top_referrers: list[dict[str, Any]]
    entry_pages: list[dict[str, Any]]
    exit_pages: list[dict[str, Any]]
    transitions: list[dict[str, Any]]


class Audit(Api):
    async def verify(self, operator: str, full: bool) -> Verification:
        params = {"full": "true"} if full else {}
        return Verification.model_validate(await self._call("GET", "/v1/audit/verify", operator, params=params))

    async def events_of(self, operator: str, email: str, limit: int = 200) -> list[Entry]:
        answer = await self._call("GET", "/v1/audit/events", operator, params={"email": email, "limit": limit})
        return [Entry.model_validate(item) for item in answer["items"]]

    async def trends(self, operator: str, first: date, last: date) -> Trends:
        params = {"from": first.isoformat(), "to": last.isoformat()}
        return Trends.model_validate(await self._call("GET", "/v1/trends", operator, params=params))


def audit_of(request: Request) -> Audit:
    client: httpx.AsyncClient = request.app.state.audit_client
    return Audit(client)


@dataclass
class Chart:
    """The two lines' points, in the SVG's own coordinates, and the axis labels."""

    views: str
    visitors: str
    top: int
    first: str
    last: str
    dots: list[tuple[float, float, str, int, int]]


def chart(days: list[Day]) -> Chart | None:
    if not days:
        return None
    top = max(max(d.views for d in days), 1)
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    step = inner_w / max(len(days) - 1, 1)

    def y(value: int) -> float:
        return round(CHART_PAD + inner_h - inner_h * value / top, 1)

    xs = [round(CHART_PAD + i * step, 1) for i in range(len(days))]
    return Chart(
        views=" ".join(f"{x},{y(d.views)}" for x, d in zip(xs, days, strict=True)),
        visitors=" ".join(f"{x},{y(d.visitors)}" for x, d in zip(xs, days, strict=True)),
        top=top,
        first=days[0].day.isoformat(),
        last=days[-1].day.isoformat(),
        dots=[(x, y(d.views), d.day.isoformat(), d.views, d.visitors) for x, d in zip(xs, days, strict=True)],
    )


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@insight_pages.get("/trends")
async def trends_page(
    request: Request,
    session: OperatorDep,
    first: Annotated[str, Query(alias="from", max_length=10)] = "",
    last: Annotated[str, Query(alias="to", max_length=10)] = "",
) -> Response:
    today = datetime.now(UTC).date()
    end = _day(last) or today
    start = _day(first) or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end or (end - start).days >= MAX_DAYS:
        return render(
            request, "trends.html", 422, error="trends_bad_range", first=start, last=end, trends=None, chart=None
        )
    await record(request, session, "trends.viewed", f"audit.trends:{start.isoformat()}..{end.isoformat()}")
    found = await audit_of(request).trends(session.operator.email, start, end)
    return render(
        request,
        "trends.html",
        first=start,
        last=end,
        trends=found,
        chart=chart(found.days),
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        pad=CHART_PAD,
        k=K_ANONYMITY,
        other=OTHER,
    )


@insight_pages.get("/audit")
async def audit_page(
    request: Request, session: OperatorDep, email: Annotated[str, Query(max_length=254)] = ""
) -> Response:
    address = email.strip()
    entries = None
    if address:
        # A look at one person's records is itself recorded, before it happens.
        await record(request, session, "audit.person_viewed", f"audit.events:{address}")
        try:
            entries = await audit_of(request).events_of(session.operator.email, address)
        except UpstreamError as exc:
            if exc.status != status.HTTP_422_UNPROCESSABLE_CONTENT:
                raise
            return render(request, "audit.html", 422, email=address, entries=None, error="audit_bad_email")
    return render(request, "audit.html", email=address, entries=entries, verification=None)


@insight_pages.post("/audit/verify")
async def verify(request: Request, session: OperatorDep) -> Response:
    form = await checked_form(request, session)
    full = form.get("full") == "on"
    await record(request, session, "audit.verified", "audit.trail" + (":full" if full else ""))
    outcome = await audit_of(request).verify(session.operator.email, full)
    return render(request, "audit.html", email="", entries=None, verification=outcome, checked_at=datetime.now(UTC))
