"""The HTTP side every service shares: app factory, probes, metrics, errors, body limit, operator token."""

from __future__ import annotations

import hmac
import inspect
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote_plus

import aio_pika
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import validation_error_definition, validation_error_response_definition
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spm_common.clientaddr import of_request, rate_limit_key
from spm_common.deadletters import Broker, DeadLetter, list_dead_letters, replay_dead_letters
from spm_common.envelope import CORRELATION_ID_PATTERN
from spm_common.logging import bind_contextvars, clear_contextvars, get_logger
from spm_common.metrics import HTTP_LATENCY
from spm_common.runtime import Runtime

log = get_logger(__name__)
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode()
# A client's request id is logged and becomes the correlation id of every event the request causes: only a
# plain token is taken (spm_common.envelope); anything else gets a fresh id.
REQUEST_ID_RE = re.compile(CORRELATION_ID_PATTERN.encode())
DEFAULT_MAX_BODY_BYTES = 64 * 1024
# The services' metrics are Prometheus (GET /metrics); FastAPI's own OpenTelemetry hooks would only cost a
# look-up of the global providers on every request.
NO_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}
DirectEndpoint = Callable[[Request], Awaitable[Response]]


def direct(*, access_log: bool = True) -> Callable[[DirectEndpoint], DirectEndpoint]:
    """Mark the endpoint of a very busy route, `async def f(request: Request) -> Response` with no
    dependencies and no path parameters. `create_app` serves it without FastAPI's per-request machinery
    (middleware stack, routing, dependency solving: about half the CPU of a small request), under the same
    body limit, request id, metrics and exception handlers. With `access_log=False` its successful requests
    get no access line (they are still counted in the metrics), for a route where a line each would be most
    of the log and of the CPU. The route is declared as usual, so the OpenAPI document and its other
    methods are unchanged."""

    def mark(endpoint: DirectEndpoint) -> DirectEndpoint:
        # Marks on the function object, read back with getattr by the app: a Callable type declares none.
        endpoint.direct = True  # type: ignore[attr-defined]
        endpoint.access_log = access_log  # type: ignore[attr-defined]
        return endpoint

    return mark


M = TypeVar("M", bound=BaseModel)


def create_app(
    runtime: Runtime,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = _ServiceApp(title=title, description=description, version="1.0.0", lifespan=lifespan, telemetry=NO_TELEMETRY)
    app.state.runtime = runtime
    app.state.operator_guard = OperatorGuard(
        runtime.settings.operator_auth_failures, runtime.settings.operator_auth_window_seconds
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(_probes(runtime))
    if runtime.consumer is not None:  # only a service that consumes has dead letters
        app.include_router(_dead_letters(runtime))
    for router in routers:
        app.include_router(router)
    _document_refusals(app)
    # Outermost first: the body limit, then the request id, metrics and access line (and the 500 of a bug),
    # then the refusal of text no service can store.
    app.add_middleware(_TextGuard)
    app.add_middleware(_Observability, service=runtime.settings.service)
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    app.serve_directly(runtime.settings.service, max_body_bytes)
    return app


def _document_refusals(app: FastAPI) -> None:
    """Every route may answer 422 (`_TextGuard` refuses unusable text in any parameter, declared or not), so
    every route documents it, as FastAPI documents it for a route with parameters (and the document always
    holds the schemas it refers to, which FastAPI adds only when it documented a 422 itself)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            components = generate().setdefault("components", {})
            schemas = {
                "ValidationError": validation_error_definition,
                "HTTPValidationError": validation_error_response_definition,
                **components.get("schemas", {}),
            }
            components["schemas"] = dict(sorted(schemas.items()))
        return app.openapi_schema  # type: ignore[return-value]  # set by generate() above, so not None

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to amend its OpenAPI
    for context in iter_route_contexts(app.routes):  # each included route, with the responses it has in this app
        if not isinstance(context.original_route, APIRoute):
            continue
        responses: dict[int | str, Any] = context.responses
        if not {422, "422", "4XX", "default"} & set(responses):
            responses[422] = {
                "description": "Validation Error",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
            }


class _ServiceApp(FastAPI):
    """FastAPI, with the routes marked `direct` taken before its middleware stack and router."""

    _direct_routes: dict[tuple[str, str], RouteContext]
    _direct_stack: ASGIApp

    def serve_directly(self, service: str, max_body_bytes: int) -> None:
        self._direct_routes = {}
        for route in iter_route_contexts(self.routes):  # the included routers' routes, with their full paths
            api_route = route.original_route
            if isinstance(api_route, APIRoute) and getattr(api_route.endpoint, "direct", False):
                takes = list(inspect.signature(api_route.endpoint).parameters)
                if route.param_convertors or takes != [api_route.dependant.request_param_name]:
                    raise TypeError(f"{route.path}: a direct route takes the request and nothing else")
                for method in route.methods or ():
                    self._direct_routes[(method, str(route.path))] = route
        self._direct_stack = _BodyLimit(_Observability(_TextGuard(self._call_directly), service), max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self._direct_routes.get((scope["method"], scope["path"]))
            if route is not None:
                scope["app"] = self
                scope["route"] = route
                await self._direct_stack(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _call_directly(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await scope["route"].endpoint(request)
        except Exception as exc:
            handler = next(
                (self.exception_handlers[c] for c in type(exc).__mro__ if c in self.exception_handlers), None
            )
            if handler is None:
                raise  # to _Observability, which answers the 500 and logs the error
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)


def _probes(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # 503 also while a health condition fails (a loop failing for too long), with `problems` saying why.
    @router.get("/readyz", summary="Its database and broker are reachable", responses={503: {}})
    async def readyz() -> JSONResponse:
        checks = await runtime.ready()
        ok = all(checks.values())
        body: dict[str, Any] = {"status": "ok" if ok else "unavailable", **checks}
        problems = runtime.health.problems()
        if problems:
            body["problems"] = problems
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        await runtime.refresh_metrics()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field and why, never echoing what was sent (it may be personal data)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid"), "type": e.get("type", "")} for e in errors
    ]
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


_bearer = HTTPBearer(auto_error=False)
# Dependencies here are `async def`: FastAPI runs a plain `def` one in a worker thread on every request.


@dataclass
class _Failures:
    since: float
    count: int = 0


class OperatorGuard:
    """Wrong operator tokens per client address, counted in this process: after `max_failures` within
    `window_seconds` of the first, the client is refused (429) whatever token it sends, until that window
    has passed. A right token before then starts the count afresh. Guessing a 32-character token is hopeless
    anyway; this keeps a guesser from trying at the speed of the service, and its noise out of the logs."""

    # Clients remembered at most: past it, expired counts are dropped, then the oldest.
    MAX_CLIENTS = 10_000

    def __init__(self, max_failures: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.clock = clock
        self._clients: dict[str, _Failures] = {}

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None if it may now."""
        failures = self._current(client)
        if failures is None or failures.count < self.max_failures:
            return None
        return max(1, math.ceil(failures.since + self.window_seconds - self.clock()))

    def failed(self, client: str) -> None:
        failures = self._current(client)
        if failures is None:
            failures = self._clients[client] = _Failures(self.clock())
            self._forget_beyond_the_limit()
        failures.count += 1
        if failures.count == self.max_failures:
            # No address in the log: it is personal data, and the count says enough.
            log.warning("operator_token_refused_repeatedly", failures=failures.count, window_s=self.window_seconds)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    def _current(self, client: str) -> _Failures | None:
        failures = self._clients.get(client)
        if failures is not None and self.clock() - failures.since >= self.window_seconds:
            del self._clients[client]
            return None
        return failures

    def _forget_beyond_the_limit(self) -> None:
        if len(self._clients) <= self.MAX_CLIENTS:
            return
        now = self.clock()
        for client in [c for c, f in self._clients.items() if now - f.since >= self.window_seconds]:
            del self._clients[client]
        while len(self._clients) > self.MAX_CLIENTS:
            del self._clients[next(iter(self._clients))]


async def require_operator(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Constant-time check of the bearer token against SPM_OPERATOR_TOKEN; unset refuses everyone. A client
    that sent too many wrong tokens gets 429 with Retry-After, even with the right one (see OperatorGuard).
    (Async, like `runtime_of`, only so FastAPI does not hand it to a worker thread on every request.)"""
    guard: OperatorGuard = request.app.state.operator_guard
    runtime: Runtime = request.app.state.runtime
    # The client behind the trusted proxies (keyed as every rate limit is): keyed on the TCP peer, the proxy,
    # ten wrong tokens from anyone would shut every operator out.
    client = rate_limit_key(of_request(request, runtime.settings.trusted_proxies))
    wait = guard.retry_after(client)
    if wait is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many wrong operator tokens from this client; try again later",
            {"Retry-After": str(wait)},
        )
    expected = runtime.settings.operator_token
    given = credentials.credentials if credentials else ""
    if expected is None or not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        if credentials is not None:  # a request without a token guesses nothing
            guard.failed(client)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "a valid operator token is required", {"WWW-Authenticate": "Bearer"}
        )
    guard.succeeded(client)


Operator = Annotated[None, Depends(require_operator)]
# Declared on every operator route (or router) so the OpenAPI documents name every status a client can see.
OPERATOR_ONLY: dict[int | str, dict[str, Any]] = {
    401: {"description": "a valid operator token is required"},
    429: {"description": "too many wrong operator tokens from this client; see Retry-After"},
}
# Declared on every route that takes a body: FastAPI answers 400 itself when a JSON body cannot even be decoded
# (not UTF-8, nested too deep), and the body limit answers 413 before any route runs.
BAD_BODY: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body could not be parsed"},
    413: {"description": "the body is over the limit"},
}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a direct route that reads `model` with `validated_body` (FastAPI cannot
    see a body the endpoint reads itself). Nested models are written out in place: pydantic refers to them as
    `#/$defs/...`, which in an OpenAPI document would point at its root, where they are not."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(
                    {**definitions[ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
                )
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return {"required": True, "content": {"application/json": {"schema": inline(schema)}}}


def validated_body(model: type[M], content_type: str | None, body: bytes, *, any_content_type: bool = False) -> M:
    """A JSON request body validated against `model`, refused as FastAPI refuses a declared body parameter
    (422 naming each bad field under `body`, never echoing it), for a hot route that reads the `Request`
    itself (see `direct`). `any_content_type` takes the body as JSON whatever its Content-Type says, for a
    route browsers call with `navigator.sendBeacon`, which can only send a string as text/plain."""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if (
        not any_content_type
        and media_type != "application/json"
        and not (media_type.startswith("application/") and media_type.endswith("+json"))
    ):
        raise RequestValidationError(
            [
                {
                    "type": "content_type",
                    "loc": ("body",),
                    "msg": "the body must be JSON (Content-Type: application/json)",
                }
            ]
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


async def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]


class _Observability:
    """Request id into the log context (and from there into the events a request causes), latency metrics,
    one access line per request without query strings (they may hold an e-mail address)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers") or () if k == _REQUEST_ID_KEY), b"")
        request_id = given.decode("ascii") if REQUEST_ID_RE.fullmatch(given) else str(uuid.uuid4())
        clear_contextvars()
        bind_contextvars(service=self.service, request_id=request_id, correlation_id=request_id)
        started = time.perf_counter()
        status_code = 500
        responded = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code, responded
            if message["type"] == "http.response.start":
                responded = True
                status_code = message["status"]
                message.setdefault("headers", []).append((_REQUEST_ID_KEY, request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if responded:
                raise  # half a response sent: nothing to do but let the server close the connection
            # A bug. Answered here, in the documented shape, rather than by Starlette's outermost middleware:
            # that one re-raises after its 500, and uvicorn then closes the connection, so a client's next
            # request on that kept-alive connection was dropped without an answer (whatever that request was).
            log.exception("unhandled error", method=scope["method"], path=_template(scope))
            internal_error = JSONResponse({"detail": "internal server error"}, status.HTTP_500_INTERNAL_SERVER_ERROR)
            await internal_error(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = _template(scope)
            HTTP_LATENCY.labels(self.service, scope["method"], template, str(status_code)).observe(elapsed)
            quiet = status_code < 400 and not getattr(getattr(route, "endpoint", None), "access_log", True)
            if template not in ("/healthz", "/readyz", "/metrics") and not quiet:
                log.info(
                    "request",
                    method=scope["method"],
                    path=template,
                    status=status_code,
                    duration_ms=round(elapsed * 1000, 2),
                )


def _template(scope: Scope) -> str:
    """The route's path template (never the path itself: it may hold an address or a token)."""
    return str(getattr(scope.get("route"), "path", "unmatched"))


class _BodyLimit:
    """413 for a body over the limit, by Content-Length or while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope.get("headers") or () if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _too_large(send)
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read up to the limit before the app sees anything. Raising from the
        # app's receive instead would reach FastAPI's body parsing, which turns any error into a 400.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.max_bytes:
                await _too_large(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# What no service can store, compare or send on: NUL (Postgres text refuses it) and a UTF-16 surrogate without its
# partner (it cannot be encoded as UTF-8). A query string or form carries NUL as %00; JSON carries both as escapes
# (\u0000, \ud800-\udfff), which the standard library's parser (FastAPI's, for a declared body) turns into
# exactly those characters. Refused here, for every parameter of every route, before any of them is read.
_PERCENT_NUL = re.compile(rb"%00|\x00")
_JSON_ESCAPES = re.compile(
    rb"\\\\"  # an escaped backslash, passed over so that what follows it is read as text
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a surrogate pair: one character, fine
    rb"|(\\u0000|\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\x00)"  # NUL, or half a pair: refused
)
_FORM_TYPES = (b"application/x-www-form-urlencoded",)
_UNSAFE_TEXT = "must not contain NUL characters or unpaired surrogates"


class _TextGuard:
    """422 for NUL or a lone surrogate in the path, the query string, a header or a JSON or form body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        where = _unsafe_place(scope, headers)
        if where is None and any(k in (b"content-length", b"transfer-encoding") for k, _ in headers):
            body, receive = await _buffered(receive)
            content_type = next((v for k, v in headers if k == b"content-type"), b"").partition(b";")[0].strip()
            if _unsafe_body(body, content_type.lower()):
                where = ["body", *_unsafe_field(body)]
        if where is None:
            await self.app(scope, receive, send)
            return
        # Named as every other 422 of the API names a field; the value is never echoed.
        response = JSONResponse(
            {"detail": [{"loc": where, "msg": _UNSAFE_TEXT, "type": "string_unsafe"}]},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
        await response(scope, receive, send)


def _unsafe_place(scope: Scope, headers: list[tuple[bytes, bytes]]) -> list[str | int] | None:
    # Plain substring tests first (a few microseconds a request in all, on the busiest routes too).
    if "\x00" in scope["path"]:
        return ["path"]
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for pair in query.split(b"&"):
            name, _, value = pair.partition(b"=")
            if _PERCENT_NUL.search(value) and not _PERCENT_NUL.search(name):
                return ["query", unquote_plus(name.decode("latin-1"))]
        return ["query"]
    if b"\x00" in b"".join([value for _, value in headers]):
        name = next(name for name, value in headers if b"\x00" in value)
        return ["header", name.decode("latin-1")]
    return None


def _unsafe_body(body: bytes, content_type: bytes) -> bool:
    if content_type in _FORM_TYPES:
        return _PERCENT_NUL.search(body) is not None
    if content_type.startswith(b"multipart/") or content_type == b"application/octet-stream":
        return False  # not text: read, if ever, by a route that knows what it holds
    # JSON, or what a route reads as JSON whatever its Content-Type says (see `validated_body`).
    if b"\\u" not in body and b"\x00" not in body:
        return False  # no escape of a code point, no NUL: nearly every body, told apart at memchr speed
    return any(match.group(1) for match in _JSON_ESCAPES.finditer(body))


def _unsafe_field(body: bytes) -> list[str | int]:
    """Where in a JSON body the first unusable string is (as a 422 names a field), or nowhere in particular."""
    try:
        document = json.loads(body)  # reads NUL and lone surrogates into the strings, where they can be found
    except (ValueError, RecursionError):
        return []

    def find(node: Any, path: list[str | int]) -> list[str | int] | None:
        if isinstance(node, str):
            return path if _unusable(node) else None
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            if isinstance(key, str) and _unusable(key):
                return path
            found = find(value, [*path, key])
            if found is not None:
                return found
        return None

    try:
        return find(document, []) or []
    except RecursionError:  # nested about as deep as the parser allows
        return []


def _unusable(text: str) -> bool:
    return "\x00" in text or any("\ud800" <= c <= "\udfff" for c in text)


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body (the body limit, outside, has bounded it), and a `receive` that hands it on again."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _too_large(send: Send) -> None:
    response = JSONResponse({"detail": "request body too large"}, status_code=status.HTTP_413_CONTENT_TOO_LARGE)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Any:
    return {"type": "http.disconnect"}


class Replayed(BaseModel):
    replayed: int


# The console names the operator who acts; the service logs it with what was done.
ActingOperator = Annotated[
    str | None,
    Header(alias="X-SPM-Operator", max_length=320, description="the operator acting; logged with the replay"),
]


def _dead_letters(runtime: Runtime) -> APIRouter:
    """The service's own dead letters for operators (the console's dead-letter page): listed without being
    removed, and replayed to its queue, with its own broker user (see spm_common.deadletters)."""
    router = APIRouter(
        prefix="/v1/dead-letters",
        tags=["dead letters"],
        responses={**OPERATOR_ONLY, 503: {"description": "the broker did not answer"}},
    )

    def amqp_url() -> Broker:
        # The service's own live connection (its broker user), a channel of its own on it.
        return runtime.broker.connect

    @asynccontextmanager
    async def broker_answers() -> AsyncIterator[None]:
        try:
            yield
        except (aio_pika.exceptions.AMQPError, OSError, TimeoutError):
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the broker did not answer") from None

    @router.get("", summary="Dead-lettered messages, oldest first (type, time, attempts, reason; never the body)")
    async def list_letters(_: Operator, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DeadLetter]:
        async with broker_answers():
            return await list_dead_letters(amqp_url(), runtime.topology, limit, runtime.pool)

    @router.post("/replay", summary="Replay every dead letter waiting now to the service's queue")
    async def replay_all(
        _: Operator, operator: ActingOperator = None, limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000
    ) -> Replayed:
        async with broker_answers():
            moved = await replay_dead_letters(amqp_url(), runtime.topology, limit, runtime.pool)
        log.info("dead letters replayed", operator=operator, replayed=moved)
        return Replayed(replayed=moved)

    @router.post(
        "/{message_id}/replay",
        summary="Replay one dead letter to the service's queue",
        responses={404: {"description": "no dead letter with that message id"}},
    )
    async def replay_one(
        _: Operator, message_id: Annotated[str, Path(min_length=1, max_length=200)], operator: ActingOperator = None
    ) -> Replayed:
        async with broker_answers():
            moved = await replay_dead_letters(amqp_url(), runtime.topology, 100_000, runtime.pool, message_id)
        if not moved:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no dead letter with that message id")
        log.info("dead letter replayed", operator=operator, message_id=message_id)
        return Replayed(replayed=moved)

    return router
