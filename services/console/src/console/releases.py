"""Releases and news (admin only): the product catalogue, and upgrades and news sent to purchasers.

The console holds no broker rights for this: it asks the orders service, which records the fan-out as its
`upgrade.released` / `product.announced` consumer would and sends it through its own outbox. Sending goes
dry run (how many it reaches) -> optional test send to the operator's own address -> confirm; the fan-out's
page then refreshes itself every 2 seconds (no script) with an HTML progress bar, and offers pause, resume
and cancel. Every step is an `operator.action`.
"""

from __future__ import annotations

from datetime import datetime

# Loosely typed: a release draft as JSON (orders validates it) and a template's context.
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.datastructures import FormData

from console import i18n
from console.api import AdminDep, checked_form, field, language_of, record, render, see_other, state_of
from console.upstream import Api, UpstreamError

releases_pages = APIRouter(include_in_schema=False)
REFRESH_SECONDS = 2
UPGRADE_FIELDS = ("release_id", "sku", "version", "title", "download_url", "notes_url", "eligible_since")
NEWS_FIELDS = ("announcement_id", "title", "summary", "url")


class Product(BaseModel):
    sku: str
    name_en: str
    name_vi: str
    download_url: str
    major_version: int


class Fanout(BaseModel):
    id: int
    kind: Literal["upgrade", "news"]
    key: str
    title: str
    state: Literal["running", "paused", "cancelled", "finished"]
    started_by: str | None
    total: int | None
    notified: int
    created_at: datetime
    finished_at: datetime | None
    rate_per_second: float | None = None
    seconds_left: float | None = None

    @property
    def percent(self) -> int:
        if not self.total:
            return 100 if self.state == "finished" else 0
        return min(100, round(100 * self.notified / self.total))


class Releases(Api):
    """The orders service's release desk."""

    async def products(self, operator: str) -> list[Product]:
        return [Product.model_validate(p) for p in await self._call("GET", "/v1/products", operator)]

    async def save_product(self, operator: str, sku: str, change: dict[str, Any]) -> None:
        await self._call("PUT", f"/v1/products/{sku}", operator, json=change)

    async def dry_run(self, operator: str, request: dict[str, Any]) -> int:
        answer = await self._call("POST", "/v1/fanouts/dry-run", operator, json=request)
        return int(answer["recipients"])

    async def test_send(self, operator: str, request: dict[str, Any], to: str, locale: str) -> None:
        await self._call("POST", "/v1/fanouts/test", operator, json={**request, "to": to, "locale": locale})

    async def start(self, operator: str, request: dict[str, Any]) -> Fanout:
        return Fanout.model_validate(await self._call("POST", "/v1/fanouts", operator, json=request))

    async def fanouts(self, operator: str) -> list[Fanout]:
        return [Fanout.model_validate(f) for f in await self._call("GET", "/v1/fanouts", operator)]

    async def fanout(self, operator: str, fanout_id: int) -> Fanout:
        return Fanout.model_validate(await self._call("GET", f"/v1/fanouts/{fanout_id}", operator))

    async def control(self, operator: str, fanout_id: int, action: str) -> Fanout:
        return Fanout.model_validate(await self._call("POST", f"/v1/fanouts/{fanout_id}/{action}", operator))


def releases_of(request: Request) -> Releases:
    return Releases(state_of(request).orders.client)


def _draft(form: FormData) -> tuple[Literal["upgrade", "news"], dict[str, str], dict[str, Any]]:
    """The form as typed (to show again) and as the orders service takes it."""
    kind: Literal["upgrade", "news"] = "news" if field(form, "kind") == "news" else "upgrade"
    names = NEWS_FIELDS if kind == "news" else UPGRADE_FIELDS
    typed = {name: field(form, name).strip() for name in names}
    data: dict[str, Any] = {k: v for k, v in typed.items() if v}
    if kind == "upgrade":
        typed["new_registration"] = "on" if field(form, "new_registration") else ""
        data["new_registration"] = bool(typed["new_registration"])
        data.setdefault("released_at", datetime.now().astimezone().isoformat())
        if "eligible_since" in data and "T" not in data["eligible_since"]:
            data["eligible_since"] += "T00:00:00Z"  # a date from <input type=date>
    return kind, typed, {kind: data}


async def _page(request: Request, session: AdminDep, status_code: int = 200, **context: Any) -> Response:
    releases = releases_of(request)
    operator = session.operator.email
    context.setdefault("draft", {})
    context.setdefault("kind", "upgrade")
    return render(
        request,
        "releases.html",
        status_code,
        products=await releases.products(operator),
        fanouts=await releases.fanouts(operator),
        **context,
    )


@releases_pages.get("/releases")
async def releases_page(
    request: Request, session: AdminDep, notice: Annotated[str | None, Query(max_length=40)] = None
) -> Response:
    await record(request, session, "releases.viewed", "orders.releases")
    return await _page(request, session, notice=notice if notice in i18n.TEXTS else None)


@releases_pages.post("/releases/products")
async def save_product(request: Request, session: AdminDep) -> Response:
    form = await checked_form(request, session)
    sku = field(form, "sku").strip().upper()
    change = {
        "name_en": field(form, "name_en").strip(),
        "name_vi": field(form, "name_vi").strip(),
        "download_url": field(form, "download_url").strip(),
        "major_version": field(form, "major_version").strip() or "0",
    }
    if not sku or "/" in sku:
        return await _page(request, session, 422, product_error="product_invalid", product=change)
    await record(request, session, "product.saved", f"orders.product:{sku}")
    try:
        await releases_of(request).save_product(session.operator.email, sku, change)
    except UpstreamError as exc:
        if exc.status != status.HTTP_422_UNPROCESSABLE_CONTENT:
            raise
        return await _page(request, session, 422, product_error="product_invalid", product={"sku": sku, **change})
    return see_other("/releases?notice=product_saved")


@releases_pages.post("/releases/publish")
async def publish(request: Request, session: AdminDep) -> Response:
    """`action=dry_run` counts and shows the confirm button; `test` mails the operator; `start` sends."""
    form = await checked_form(request, session)
    kind, typed, body = _draft(form)
    action = field(form, "action")
    releases = releases_of(request)
    operator = session.operator.email
    key = typed.get("release_id") or typed.get("announcement_id") or "-"
    try:
        if action == "start":
            await record(request, session, "fanout.started", f"orders.fanout:{kind}:{key}")
            started = await releases.start(operator, body)
            return see_other(f"/releases/fanouts/{started.id}")
        if action == "test":
            await record(request, session, "fanout.test_sent", f"orders.fanout:{kind}:{key}")
            await releases.test_send(operator, body, operator, language_of(request))
            count = await releases.dry_run(operator, body)  # counted again: the confirm button stays in reach
            return await _page(request, session, kind=kind, draft=typed, recipients=count, notice="test_sent")
        await record(request, session, "fanout.dry_run", f"orders.fanout:{kind}:{key}")
        count = await releases.dry_run(operator, body)
        return await _page(request, session, kind=kind, draft=typed, recipients=count)
    except UpstreamError as exc:
        if exc.status == status.HTTP_409_CONFLICT:
            return await _page(request, session, 409, kind=kind, draft=typed, error="fanout_sent_before")
        if exc.status != status.HTTP_422_UNPROCESSABLE_CONTENT:
            raise
        return await _page(request, session, 422, kind=kind, draft=typed, error="fanout_invalid")


@releases_pages.get("/releases/fanouts/{fanout_id}")
async def fanout_page(request: Request, session: AdminDep, fanout_id: int) -> Response:
    fanout = await releases_of(request).fanout(session.operator.email, fanout_id)
    return render(
        request,
        "fanout.html",
        fanout=fanout,
        refresh=REFRESH_SECONDS if fanout.state == "running" else None,
    )


@releases_pages.post("/releases/fanouts/{fanout_id}/{action}")
async def control(
    request: Request, session: AdminDep, fanout_id: int, action: Literal["pause", "resume", "cancel"]
) -> Response:
    await checked_form(request, session)
    await record(request, session, f"fanout.{action}", f"orders.fanout:{fanout_id}")
    try:
        await releases_of(request).control(session.operator.email, fanout_id, action)
    except UpstreamError as exc:
        if exc.status != status.HTTP_404_NOT_FOUND:
            raise
    return see_other(f"/releases/fanouts/{fanout_id}")
