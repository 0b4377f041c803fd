"""The operators' release desk (the console calls it): the product catalogue, and upgrades and news started
from a form instead of the release pipeline's event.

A fan-out started here is recorded exactly as one the `upgrade.released` / `product.announced` consumer
records, so the same worker sends it through the outbox; only the operator (`X-SPM-Operator`), the number of
recipients counted at the start, and pause / cancel are added. A dry run counts, a test send mails one
address, and nothing lists purchasers.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Header, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from spm_common.db import Connection
from spm_common.http import BAD_BODY, OPERATOR_ONLY, Operator, RuntimeDep
from spm_common.inputs import DbBigInt
from spm_common.outbox import enqueue
from spm_common.runtime import Runtime

from orders import fanout, store
from orders.events import Email, Line, ProductAnnounced, UpgradeReleased, Url
from orders.settings import Settings

router = APIRouter(prefix="/v1", tags=["releases"], responses=OPERATOR_ONLY)
OperatorName = Annotated[str, Header(alias="X-SPM-Operator", min_length=1, max_length=254)]
MAX_LISTED = 50
SkuPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Z0-9][A-Z0-9._-]*$")]
FanoutId = Annotated[DbBigInt, Path(ge=1)]


class Product(BaseModel):
    sku: str
    name_en: str
    name_vi: str
    download_url: str
    major_version: int


class ProductChange(BaseModel):
    name_en: Line
    name_vi: Line
    download_url: Url
    major_version: Annotated[int, Field(ge=0, le=10_000)]


class FanoutRequest(BaseModel):
    """Exactly one of `upgrade` and `news`."""

    upgrade: UpgradeReleased | None = None
    news: ProductAnnounced | None = None

    def chosen(self) -> tuple[Literal["upgrade", "news"], UpgradeReleased | ProductAnnounced, str]:
        if (self.upgrade is None) == (self.news is None):
            raise RequestValidationError(
                [{"loc": ("body", "upgrade"), "msg": "give exactly one of upgrade and news", "type": "value_error"}]
            )
        if self.upgrade is not None:
            return fanout.UPGRADE, self.upgrade, self.upgrade.release_id
        assert self.news is not None
        return fanout.NEWS, self.news, self.news.announcement_id


class TestSend(FanoutRequest):
    to: Email
    locale: Literal["vi", "en"] = "vi"


class DryRun(BaseModel):
    kind: Literal["upgrade", "news"]
    key: str
    recipients: int


class TestSent(BaseModel):
    event_id: str


class FanoutView(BaseModel):
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
    rate_per_second: float | None = Field(description="notified per second since the start, while running")
    seconds_left: float | None = Field(description="at that rate, to reach total")


def _settings(runtime: Runtime) -> Settings:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return settings


@router.get("/products", response_model=list[Product], summary="The product catalogue (operator)")
async def products(_: Operator, runtime: RuntimeDep) -> list[Product]:
    async with runtime.pool.acquire() as conn:
        rows = await store.all_products(conn)
    return [Product(**dict(row)) for row in rows]


@router.put(
    "/products/{sku}",
    response_model=Product,
    summary="Add a product, or change it when the sku exists (operator)",
    responses={**BAD_BODY, 422: {"description": "invalid product"}},
)
async def put_product(_: Operator, runtime: RuntimeDep, sku: SkuPath, change: ProductChange) -> Product:
    if "\x00" in change.name_en + change.name_vi:  # no text column holds a NUL character
        raise RequestValidationError(
            [{"loc": ("body", "name_en"), "msg": "contains a NUL character", "type": "value_error"}]
        )
    url = str(change.download_url)
    async with runtime.pool.acquire() as conn:
        await store.upsert_product(conn, sku, change.name_en, change.name_vi, url, change.major_version)
    return Product(
        sku=sku, name_en=change.name_en, name_vi=change.name_vi, download_url=url, major_version=change.major_version
    )


async def _count(conn: Connection, kind: str, data: UpgradeReleased | ProductAnnounced) -> int:
    if isinstance(data, UpgradeReleased):
        return await store.count_upgrade_recipients(conn, data.sku, data.eligible_since)
    return await store.count_news_recipients(conn)


@router.post(
    "/fanouts/dry-run",
    response_model=DryRun,
    summary="How many purchasers an upgrade or news item would reach now; sends nothing (operator)",
    responses={**BAD_BODY, 422: {"description": "invalid upgrade or news item"}},
)
async def dry_run(_: Operator, runtime: RuntimeDep, request: FanoutRequest) -> DryRun:
    kind, data, key = request.chosen()
    async with runtime.pool.acquire() as conn:
        count = await _count(conn, kind, data)
    return DryRun(kind=kind, key=key, recipients=count)


@router.post(
    "/fanouts/test",
    response_model=TestSent,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send the e-mail a purchaser would get to one address, the operator's own (operator)",
    responses={**BAD_BODY, 422: {"description": "invalid upgrade, news item or address"}},
)
async def test_send(_: Operator, runtime: RuntimeDep, request: TestSend) -> TestSent:
    kind, data, _key = request.chosen()
    settings = _settings(runtime)
    async with runtime.pool.acquire() as conn, conn.transaction():
        event = await fanout.test_notice(conn, kind, data, request.to, request.locale, settings.source)
        await enqueue(conn, event)
    return TestSent(event_id=event.id)


@router.post(
    "/fanouts",
    response_model=FanoutView,
    status_code=status.HTTP_201_CREATED,
    summary="Start an upgrade or news fan-out, as its event would (operator)",
    description="The operator named in `X-SPM-Operator` is recorded. 409 when this release_id or "
    "announcement_id was sent before (by an event or an operator).",
    responses={**BAD_BODY, 409: {"description": "already sent"}, 422: {"description": "invalid upgrade or news"}},
)
async def start(_: Operator, runtime: RuntimeDep, request: FanoutRequest, operator: OperatorName) -> FanoutView:
    kind, data, key = request.chosen()
    settings = _settings(runtime)
    payload = orjson.dumps(data.model_dump(mode="json")).decode()
    if "\\u0000" in payload:  # Postgres' jsonb holds no NUL character
        raise RequestValidationError(
            [{"loc": ("body", kind), "msg": "contains a NUL character", "type": "value_error"}]
        )
    async with runtime.pool.acquire() as conn, conn.transaction():
        total = await _count(conn, kind, data)
        fanout_id = await store.start_fanout(
            conn, kind, key, f"{settings.source}:operator", str(uuid.uuid4()), payload, operator, total
        )
        row = await store.fanout(conn, fanout_id) if fanout_id is not None else None
    if row is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "this release or announcement was sent before")
    return _view(row)


@router.get("/fanouts", response_model=list[FanoutView], summary="The latest fan-outs, newest first (operator)")
async def list_fanouts(
    _: Operator, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 20
) -> list[FanoutView]:
    async with runtime.pool.acquire() as conn:
        rows = await store.operator_fanouts(conn, limit)
    return [_view(row) for row in rows]


@router.get(
    "/fanouts/{fanout_id}",
    response_model=FanoutView,
    summary="One fan-out's progress (operator)",
    responses={404: {"description": "no such fan-out"}},
)
async def one_fanout(_: Operator, runtime: RuntimeDep, fanout_id: FanoutId) -> FanoutView:
    async with runtime.pool.acquire() as conn:
        row = await store.fanout(conn, fanout_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such fan-out")
    return _view(row)


@router.post(
    "/fanouts/{fanout_id}/{action}",
    response_model=FanoutView,
    summary="Pause, resume or cancel a fan-out that has not finished (operator)",
    description="The batch being sent, if any, completes first; a cancelled fan-out sends nothing more.",
    responses={404: {"description": "no such fan-out, or it has finished"}},
)
async def control(
    _: Operator, runtime: RuntimeDep, fanout_id: FanoutId, action: Literal["pause", "resume", "cancel"]
) -> FanoutView:
    async with runtime.pool.acquire() as conn:
        row = await store.control_fanout(conn, fanout_id, action)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such unfinished fan-out")
    return _view(row)


def _view(row: asyncpg.Record) -> FanoutView:
    payload = orjson.loads(row["payload"])
    state: Literal["running", "paused", "cancelled", "finished"] = (
        "cancelled"
        if row["cancelled_at"]
        else "finished"
        if row["finished_at"]
        else "paused"
        if row["paused_at"]
        else "running"
    )
    rate = left = None
    if state == "running" and row["notified"]:
        elapsed = (datetime.now(row["created_at"].tzinfo) - row["created_at"]).total_seconds()
        rate = row["notified"] / max(elapsed, 0.001)
        if row["total"] is not None:
            left = max(row["total"] - row["notified"], 0) / rate
    return FanoutView(
        id=row["id"],
        kind=row["kind"],
        key=row["key"],
        title=payload.get("title", ""),
        state=state,
        started_by=row["started_by"],
        total=row["total"],
        notified=row["notified"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        rate_per_second=rate,
        seconds_left=left,
    )
