"""Wiring of the operators' console: settings, runtime (its own schema and outbox), pages, the clients of the
services' operator APIs, and the headers every answer carries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from spm_common import ratelimit
from spm_common.http import create_app
from spm_common.redaction import describe_error
from spm_common.runtime import Runtime
from spm_common.serve import serve
from spm_common.settings import load

from console import sessions, store, upstream
from console.accounts import LoginLimits
from console.api import (
    ConsoleState,
    CsrfFailed,
    Forbidden,
    MustChangePassword,
    NotLoggedIn,
    pages,
    render,
    see_other,
    templates,
)
from console.events import PUBLISHES
from console.insight import insight_pages
from console.operators import operator_pages
from console.ops import ops_pages
from console.ops_upstream import DeadLetters, Notifier, Privacy, Probes, Queues, Trail
from console.purchasers import purchaser_pages
from console.releases import releases_pages
from console.settings import MIGRATIONS, Settings

# No script at all, no inline style, nothing from elsewhere; no framing; forms post to this console only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
# A reply body of 20,000 characters, form-encoded (a Vietnamese letter is up to 9 bytes escaped).
MAX_BODY_BYTES = 256 * 1024
HSTS = "max-age=31536000"


# Ended sessions and past login-failure windows are deleted this often (a live session never is).
SWEEP_SECONDS = 600.0


def build(settings: Settings) -> Runtime:
    async def sweep(runtime: Runtime) -> None:
        health = runtime.health.loop("console-sweep")
        idle = settings.console_idle_minutes * 60
        while True:
            try:
                async with runtime.pool.acquire() as conn:
                    await store.sweep_sessions(conn, idle)
                    await ratelimit.sweep(conn)
                health.ok()
            except Exception as exc:
                health.failed(describe_error(exc))
            await asyncio.sleep(SWEEP_SECONDS)

    return Runtime(
        settings,
        migrations=MIGRATIONS,
        publishes=PUBLISHES,
        background=[sweep],
        description="The operators' web console; publishes operator.action for the audit trail.",
    )


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or load(Settings)
    runtime = build(settings)
    app = create_app(
        runtime,
        title="SPM console",
        description="The operators' web console (HTML pages; no JSON API of its own).",
        routers=[pages, operator_pages, ops_pages, releases_pages, insight_pages, purchaser_pages],
        max_body_bytes=MAX_BODY_BYTES,
    )
    token = settings.operator_token.get_secret_value() if settings.operator_token else None
    timeout = settings.console_upstream_timeout_seconds
    contact = upstream.client(settings.console_contact_url, token, timeout)
    orders = upstream.client(settings.console_orders_url, token, timeout)
    notifier = upstream.client(settings.console_notifier_url, token, timeout)
    audit = upstream.client(settings.console_audit_url, token, timeout)
    services = {"contact": contact, "orders": orders, "notifier": notifier, "audit": audit}
    monitor = settings.console_rabbitmq_monitor_url
    queues = Queues(
        monitor.get_secret_value() if monitor else None, settings.role_amqp_url(), settings.exchange, timeout
    )
    app.state.audit_client = audit  # the audit and trends pages (insight.py)
    app.state.console = ConsoleState(
        settings=settings,
        runtime=runtime,
        signer=sessions.Signer(settings.signing_key()),
        limits=LoginLimits(
            settings.console_login_failures_per_account,
            settings.console_login_failures_per_client,
            settings.console_login_window_seconds,
            settings.signing_key(),
        ),
        templates=templates(),
        contact=upstream.Contact(contact),
        orders=upstream.Orders(orders),
        clients=(contact, orders, notifier, audit),
        notifier=Notifier(notifier),
        privacy=Privacy(contact),
        trail=Trail(audit),
        probes=Probes(services),
        dead_letters={name: DeadLetters(c) for name, c in services.items()},
        queues=queues,
    )
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with started(app):
            try:
                yield
            finally:
                for client in (contact, orders, notifier, audit):
                    await client.aclose()
                await queues.aclose()

    app.router.lifespan_context = lifespan

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if settings.secure_cookies:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        # Pages hold personal data: nothing is kept by the browser, so after logout Back shows nothing.
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    async def not_logged_in(request: Request, _: Exception) -> Response:
        if request.method in ("GET", "HEAD"):
            return see_other("/login")
        return render(request, "error.html", 401, title="unauthorized_title", message="unauthorized")

    async def must_change(request: Request, _: Exception) -> Response:
        return see_other("/account/password")

    async def forbidden(request: Request, _: Exception) -> Response:
        return render(request, "error.html", 403, title="forbidden_title", message="forbidden")

    async def csrf_failed(request: Request, _: Exception) -> Response:
        return render(request, "error.html", 403, title="bad_request_title", message="csrf_failed")

    async def upstream_failed(request: Request, exc: Exception) -> Response:
        if isinstance(exc, upstream.UpstreamError) and exc.status in (404, 422):
            return render(request, "error.html", 404, title="not_found_title", message="not_found")
        return render(request, "error.html", 502, title="upstream_title", message="upstream")

    app.add_exception_handler(NotLoggedIn, not_logged_in)
    app.add_exception_handler(MustChangePassword, must_change)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(CsrfFailed, csrf_failed)
    app.add_exception_handler(upstream.UpstreamError, upstream_failed)
    return app


def main() -> None:
    settings = load(Settings)
    serve(create(settings), settings)
