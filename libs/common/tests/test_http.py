"""The HTTP factory every service shares: probes, metrics, body limit, 422 without echo, operator token."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, Field
from spm_common.db import Connection
from spm_common.envelope import CloudEvent, new_event
from spm_common.http import Operator, create_app, direct
from spm_common.outbox import enqueue
from spm_common.runtime import Runtime
from spm_common.testing.logs import captured_json_logs
from spm_common.testing.world import ADMIN_URL, OPERATOR_TOKEN, World, new_world, running

from .conftest import PROBE_MIGRATIONS, ProbeSettings

pytestmark = pytest.mark.asyncio
LIMIT = 2048


class Signup(BaseModel):
    email: str = Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[a-z]+$")
    seats: int = Field(ge=1)


router = APIRouter(prefix="/v1")


@router.post("/signups", status_code=201)
async def sign_up(body: Signup) -> dict[str, int]:
    return {"seats": body.seats}


@router.post("/beacons", status_code=202)
@direct(access_log=False)
async def beacon(request: Request) -> Response:
    body = await request.body()
    if body == b"refuse":
        raise HTTPException(409, "refused")
    if body == b"crash":
        raise RuntimeError("a bug")
    return Response(b"%d" % len(body), 202)


@router.post("/caused-events", status_code=201)
async def cause_an_event() -> dict[str, str | None]:
    """The correlation id an event caused by this request carries."""
    return {"correlationid": new_event("probe.metric", "urn:spm:probe", {}).correlationid}


@router.get("/operator-only")
async def operator_only(_: Operator) -> dict[str, bool]:
    return {"ok": True}


async def remember(conn: Connection, event: CloudEvent) -> None:
    await conn.execute("INSERT INTO things (id) VALUES ($1)", event.id)


def probe_app(settings: ProbeSettings) -> FastAPI:
    runtime = Runtime(settings, migrations=PROBE_MIGRATIONS, handlers={"probe.metric": remember})
    return create_app(runtime, title="probe", description="test-only", routers=[router], max_body_bytes=LIMIT)


@pytest.fixture
async def client(probe_settings: Callable[..., ProbeSettings]) -> AsyncIterator[Any]:
    async with running(probe_app(probe_settings())) as http:
        yield http


async def test_probes(client: Any) -> None:
    health = await client.get("/healthz", headers={"X-Request-ID": "probe-request-1"})
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert health.headers["X-Request-ID"] == "probe-request-1"
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": True, "broker": True}
    assert ready.headers["X-Request-ID"]  # one is made up when the caller sent none
    assert (await client.get("/openapi.json")).json()["paths"]["/v1/signups"]


@pytest.mark.parametrize(
    "given",
    [
        b"alice@example.com",
        b"two words",
        b"x" * 65,
        b"<script>",
        b"line\\nbreak",
        "caf\u00e9".encode("latin-1"),
        b"",
    ],
)
async def test_an_unusable_request_id_is_replaced_by_a_fresh_one(client: Any, given: bytes) -> None:
    with captured_json_logs("orders") as logs:
        response = await client.post("/v1/caused-events", headers={"X-Request-ID": given})
    assert response.status_code == 201
    fresh = response.headers["X-Request-ID"]
    assert uuid.UUID(fresh) and fresh != given.decode("latin-1")
    assert response.json() == {"correlationid": fresh}
    [access] = [line for line in logs.lines if line.get("event") == "request"]
    assert (access["request_id"], access["correlation_id"]) == (fresh, fresh)
    if given:
        assert given.decode("latin-1") not in logs.text


async def test_a_usable_request_id_is_kept(client: Any) -> None:
    given = "req-2026.12_05-" + "a" * 49  # letters, digits, ".", "_" and "-", 64 characters
    response = await client.post("/v1/caused-events", headers={"X-Request-ID": given})
    assert response.headers["X-Request-ID"] == given
    assert response.json() == {"correlationid": given}


async def test_metrics_cover_http_events_and_outbox(client: Any) -> None:
    assert (await client.post("/v1/signups", json={"email": "a@example.com", "seats": 2})).status_code == 201
    runtime: Runtime = client._transport.app.state.runtime
    event = new_event("probe.metric", runtime.settings.source, {"n": 1})
    async with runtime.pool.acquire() as conn, conn.transaction():
        await enqueue(conn, event)
    async with asyncio.timeout(10):
        while not await runtime.pool.fetchval("SELECT count(*) FROM things WHERE id = $1", event.id):
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.6)  # the relay's next pass refreshes the backlog gauge

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = response.text
    assert (
        'spm_http_request_duration_seconds_count{method="POST",route="/v1/signups",service="orders",status="201"}'
        in samples
    )
    assert 'spm_events_published_total{service="orders",type="probe.metric"}' in samples
    assert 'spm_events_consumed_total{outcome="processed",service="orders",type="probe.metric"}' in samples
    assert 'spm_outbox_backlog{service="orders"} 0.0' in samples
    assert "spm_events_publish_failed_total" in samples


async def test_a_direct_route_keeps_the_limits_errors_and_metrics(client: Any) -> None:
    app = client._transport.app
    assert ("POST", "/v1/beacons") in app._direct_routes
    ok = await client.post("/v1/beacons", content=b"hello", headers={"X-Request-ID": "beacon-1"})
    assert (ok.status_code, ok.text, ok.headers["X-Request-ID"]) == (202, "5", "beacon-1")
    refused = await client.post("/v1/beacons", content=b"refuse")
    assert (refused.status_code, refused.json()) == (409, {"detail": "refused"})
    assert (await client.post("/v1/beacons", content=b"x" * (LIMIT + 1))).status_code == 413
    with pytest.raises(RuntimeError):  # the test client re-raises what a server would log, after the 500
        await client.post("/v1/beacons", content=b"crash")
    assert (await client.get("/v1/beacons")).status_code == 405  # other methods: FastAPI as usual
    samples = (await client.get("/metrics")).text
    assert 'route="/v1/beacons",service="orders",status="202"' in samples
    assert 'route="/v1/beacons",service="orders",status="409"' in samples
    assert "/v1/beacons" in (await client.get("/openapi.json")).json()["paths"]


async def test_a_body_over_the_limit_is_refused_with_413(client: Any) -> None:
    big = json.dumps({"email": "a@example.com", "seats": 1, "padding": "x" * LIMIT}).encode()
    declared = await client.post("/v1/signups", content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413
    assert declared.json() == {"detail": "request body too large"}

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    streamed = await client.post("/v1/signups", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert streamed.json() == {"detail": "request body too large"}

    async def small_chunks() -> AsyncIterator[bytes]:
        yield b'{"email": "a@example.com", '
        yield b'"seats": 3}'

    fine = await client.post("/v1/signups", content=small_chunks(), headers={"Content-Type": "application/json"})
    assert fine.status_code == 201 and fine.json() == {"seats": 3}


async def test_a_422_names_the_fields_but_never_echoes_input(client: Any) -> None:
    response = await client.post("/v1/signups", json={"email": "Trần Thị Thử <visitor@example", "seats": "many seats"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert {tuple(d["loc"]) for d in detail} == {("body", "email"), ("body", "seats")}
    assert all(set(d) == {"loc", "msg", "type"} for d in detail)
    for echoed in ("Trần", "visitor@example", "many seats"):
        assert echoed not in response.text

    broken = await client.post(
        "/v1/signups",
        content=b'{"email": "visitor@example.com", "seats": ',
        headers={"Content-Type": "application/json"},
    )
    assert broken.status_code == 422
    assert "visitor@example.com" not in broken.text


async def test_operator_endpoints_need_the_token(client: Any) -> None:
    assert (await client.get("/v1/operator-only")).status_code == 401
    wrong = await client.get("/v1/operator-only", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    assert "not-the-token" not in wrong.text
    prefix = await client.get("/v1/operator-only", headers={"Authorization": f"Bearer {OPERATOR_TOKEN[:-1]}"})
    assert prefix.status_code == 401
    basic = await client.get("/v1/operator-only", headers={"Authorization": f"Basic {OPERATOR_TOKEN}"})
    assert basic.status_code == 401
    right = await client.get("/v1/operator-only", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert right.status_code == 200 and right.json() == {"ok": True}


async def test_operator_endpoints_refuse_everyone_while_no_token_is_set(
    probe_settings: Callable[..., ProbeSettings],
) -> None:
    app = probe_app(probe_settings(operator_token=None))
    async with running(app) as client:
        for header in ({}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {OPERATOR_TOKEN}"}):
            assert (await client.get("/v1/operator-only", headers=header)).status_code == 401


async def test_readyz_is_503_while_the_database_is_unreachable(lab: World) -> None:
    # A database of its own, since this test shuts everyone out of it for a moment.
    world = new_world()
    await world.create()
    try:
        async with running(probe_app(world.settings(ProbeSettings, outbox_poll_seconds=0.5))) as client:
            assert (await client.get("/readyz")).status_code == 200
            admin = await asyncpg.connect(ADMIN_URL)  # another database: this one is about to refuse everyone
            try:
                await admin.execute(f'ALTER DATABASE "{world.name}" ALLOW_CONNECTIONS false')
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", world.name
                )
                down = await client.get("/readyz")
                assert down.status_code == 503
                assert down.json() == {"status": "unavailable", "database": False, "broker": True}
                assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
            finally:
                await admin.execute(f'ALTER DATABASE "{world.name}" ALLOW_CONNECTIONS true')
                await admin.close()
            async with asyncio.timeout(10):
                while (await client.get("/readyz")).status_code != 200:
                    await asyncio.sleep(0.2)
    finally:
        await world.destroy()
