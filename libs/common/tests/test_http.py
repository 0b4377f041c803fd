"""The HTTP factory every service shares: probes, metrics, body limit, 422 without echo, operator token."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, ClassVar

import asyncpg
import pytest
from fastapi import APIRouter, FastAPI, Header, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from spm_common import outbox
from spm_common.db import Connection
from spm_common.envelope import Payload, new_event
from spm_common.handlers import Handlers, Meta
from spm_common.http import Operator, create_app, direct
from spm_common.runtime import Runtime
from spm_common.testing.logs import captured_json_logs
from spm_common.testing.world import ADMIN_URL, OPERATOR_TOKEN, World, new_world, running, serving

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


@router.get("/notes/{name}")
async def note(name: str, text: str = "", x_note: Annotated[str, Header()] = "") -> dict[str, int]:
    return {"name": len(name), "text": len(text), "header": len(x_note)}


@router.get("/crash")
async def crash() -> None:
    raise RuntimeError("a bug")


@router.get("/operator-only")
async def operator_only(_: Operator) -> dict[str, bool]:
    return {"ok": True}


class Metric(Payload):
    model_config = ConfigDict(extra="allow")
    event_type: ClassVar[str] = "probe.metric"


async def remember(conn: Connection, metric: Metric, event: Meta) -> None:
    await conn.execute("INSERT INTO things (id) VALUES ($1)", event.id)


def probe_app(settings: ProbeSettings) -> FastAPI:
    runtime = Runtime(settings, migrations=PROBE_MIGRATIONS, handlers=Handlers().on(Metric, remember))
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
    uuid.UUID(fresh)  # raises unless it is one
    assert fresh != given.decode("latin-1")
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
        await outbox.add(conn, event)
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
    crashed = await client.post("/v1/beacons", content=b"crash")  # a bug: logged, and a 500 in the usual shape
    assert (crashed.status_code, crashed.json()) == (500, {"detail": "internal server error"})
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


# NUL and lone surrogates, wherever text arrives; each fits the schema here, so only the shared guard refuses it.
UNUSABLE_TEXT: dict[str, tuple[str, str, dict[str, Any], list[str | int]]] = {
    "NUL in a path segment": ("GET", "/v1/notes/a%00b", {}, ["path"]),
    "NUL in the query string": ("GET", "/v1/notes/a?text=x%00y", {}, ["query", "text"]),
    "NUL in an unknown parameter": ("GET", "/v1/notes/a?other=%00", {}, ["query", "other"]),
    "NUL in a header": ("GET", "/v1/notes/a", {"headers": {"X-Note": "x\x00y"}}, ["header", "x-note"]),
    "NUL escaped in JSON": (
        "POST",
        "/v1/signups",
        {"content": b'{"email": "a\\u0000b@example.com", "seats": 1}'},
        ["body", "email"],
    ),
    "lone high surrogate": (
        "POST",
        "/v1/signups",
        {"content": b'{"email": "a\\ud800b@example.com", "seats": 1}'},
        ["body", "email"],
    ),
    "lone low surrogate in a key": ("POST", "/v1/signups", {"content": b'{"\\udc00": 1}'}, ["body"]),
    "NUL deep down": ("POST", "/v1/signups", {"content": b"[" * 1010 + b'"\\u0000"' + b"]" * 1010}, ["body"]),
    "NUL in a direct route's body": (
        "POST",
        "/v1/beacons",
        {"content": b'{"url": ["/", "/\\u0000"]}'},
        ["body", "url", 1],
    ),
}


@pytest.mark.parametrize("case", list(UNUSABLE_TEXT))
async def test_nul_and_lone_surrogates_are_refused_with_a_422_wherever_they_come(client: Any, case: str) -> None:
    method, url, extra, loc = UNUSABLE_TEXT[case]
    headers = {"Content-Type": "application/json", **extra.get("headers", {})}
    response = await client.request(method, url, headers=headers, content=extra.get("content"))
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {"loc": loc, "msg": "must not contain NUL characters or unpaired surrogates", "type": "string_unsafe"}
        ]
    }


async def test_text_that_only_looks_unusable_is_accepted(client: Any) -> None:
    # An escaped backslash before "u0000" is text, and a surrogate pair is one character (an emoji).
    for email in (b"a\\\\u0000@example.com", b"a\\ud83d\\ude00@example.com"):
        body = b'{"email": "' + email + b'", "seats": 2}'
        response = await client.post("/v1/signups", content=body, headers={"Content-Type": "application/json"})
        assert (response.status_code, response.json()) == (201, {"seats": 2})
    assert (await client.get("/v1/notes/a%2500?text=100%25")).json() == {"name": 4, "text": 4, "header": 0}


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> tuple[int, bytes]:
    """One HTTP/1.1 request on an open connection, and its status and body (b"" status 0 if it was closed)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return 0, b""
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    return int(lines[0].split()[1]), await reader.readexactly(length)


async def test_a_bug_is_a_500_in_the_usual_shape_and_the_connection_stays_open(
    probe_settings: Callable[..., ProbeSettings],
) -> None:
    # Starlette answers a bug with a 500 and re-raises it; uvicorn then closed the connection, so the next
    # request a client had sent on that kept-alive connection got no answer at all, whatever it was.
    async with serving(probe_app(probe_settings())) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            async with asyncio.timeout(30):
                status, body = await _exchange(reader, writer, "/v1/crash")
                assert (status, json.loads(body)) == (500, {"detail": "internal server error"})
                try:
                    after = await _exchange(reader, writer, "/healthz")
                except (asyncio.IncompleteReadError, ConnectionError):
                    after = (0, b"")
                assert after == (200, b'{"status":"ok"}')
        finally:
            writer.close()


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


@pytest.mark.parametrize("behind_a_proxy", [True, False], ids=["trusted-proxy", "no-trusted-proxy"])
async def test_wrong_operator_tokens_count_against_the_client_behind_a_trusted_proxy(
    probe_settings: Callable[..., ProbeSettings], behind_a_proxy: bool
) -> None:
    """Every request comes from the proxy (the test client's peer, 127.0.0.1): keyed on it, one guesser would
    shut every operator out. An untrusted peer's X-Forwarded-For is the client's own claim, and ignored."""
    settings = probe_settings(operator_auth_failures=2, trusted_proxies=["127.0.0.1/32"] if behind_a_proxy else [])
    right, wrong = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}, {"Authorization": "Bearer not-the-token"}
    async with running(probe_app(settings)) as client:

        async def ask(token: dict[str, str], forwarded_for: str) -> int:
            headers = {**token, "X-Forwarded-For": forwarded_for}
            return (await client.get("/v1/operator-only", headers=headers)).status_code

        guesser, colleague = "198.51.100.7", "2001:db8:7:1::1"
        assert [await ask(wrong, guesser) for _ in range(2)] == [401, 401]
        assert await ask(right, guesser) == 429
        assert await ask(right, colleague) == (200 if behind_a_proxy else 429)
        # An IPv6 client is counted by its /64 (it picks any address inside it).
        if behind_a_proxy:
            assert [await ask(wrong, f"2001:db8:7:1::{i}") for i in (2, 3)] == [401, 401]
            assert await ask(right, "2001:db8:7:1:ffff::9") == 429


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
