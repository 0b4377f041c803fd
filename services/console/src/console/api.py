"""The console's pages: server-rendered HTML, forms that post and redirect, every page a plain URL.

Every page needs a live session (`OperatorDep`) except the login page; every form carries the session's CSRF
token (the login form, a token of its own cookie); admin pages need the admin role (`AdminDep`). Each view
of a person's data and each action is recorded (`actions.record`) before it happens.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any  # for a template's context: whatever its template shows
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from spm_common.clientaddr import of_request, rate_limit_key
from spm_common.runtime import Runtime
from starlette.datastructures import FormData

from console import accounts, actions, i18n, sessions, store
from console.accounts import LoginLimits
from console.ops_upstream import DeadLetters, Notifier, Privacy, Probes, Queues, Trail
from console.settings import Settings
from console.store import SessionRow
from console.upstream import Contact, Orders, UpstreamError

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
MAX_SEARCH = 200
MAX_FORM_FIELD = 20_000

pages = APIRouter(include_in_schema=False)


@dataclass
class ConsoleState:
    settings: Settings
    runtime: Runtime
    signer: sessions.Signer
    limits: LoginLimits
    templates: Environment
    contact: Contact
    orders: Orders
    clients: tuple[httpx.AsyncClient, ...]
    # The operations pages (ops.py).
    notifier: Notifier
    privacy: Privacy
    trail: Trail
    probes: Probes
    dead_letters: dict[str, DeadLetters]
    queues: Queues

    @property
    def idle(self) -> timedelta:
        return timedelta(minutes=self.settings.console_idle_minutes)

    @property
    def lifetime(self) -> timedelta:
        return timedelta(hours=self.settings.console_session_hours)


def templates() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True), trim_blocks=True)


# Why a request is refused; each has a handler in app.py that renders a page with the right status.


class NotLoggedIn(Exception):
    pass


class MustChangePassword(Exception):
    pass


class Forbidden(Exception):
    pass


class CsrfFailed(Exception):
    pass


def state_of(request: Request) -> ConsoleState:
    console: ConsoleState = request.app.state.console
    return console


def language_of(request: Request) -> i18n.Language:
    return i18n.chosen(request.cookies.get(sessions.LANGUAGE_COOKIE))


async def session_of(request: Request) -> SessionRow:
    console = state_of(request)
    token = console.signer.unsign(request.cookies.get(sessions.SESSION_COOKIE))
    async with console.runtime.pool.acquire() as conn:
        session = await sessions.current(conn, token, console.idle)
    if session is None:
        raise NotLoggedIn
    request.state.session = session
    if session.operator.must_change and request.url.path not in ("/account/password", "/logout", "/language"):
        raise MustChangePassword
    return session


async def admin_of(session: Annotated[SessionRow, Depends(session_of)]) -> SessionRow:
    if session.operator.role != "admin":
        raise Forbidden
    return session


OperatorDep = Annotated[SessionRow, Depends(session_of)]
AdminDep = Annotated[SessionRow, Depends(admin_of)]


async def checked_form(request: Request, session: SessionRow | None) -> FormData:
    """The posted form, once its CSRF token matches the session's (or, before login, the login cookie's)."""
    form = await request.form(max_files=0, max_fields=20, max_part_size=MAX_FORM_FIELD * 4)
    given = form.get("csrf_token")
    expected = session.csrf_token if session else _login_token(request)
    if not isinstance(given, str) or expected is None or not sessions.same_token(expected, given):
        raise CsrfFailed
    return form


def _login_token(request: Request) -> str | None:
    return state_of(request).signer.unsign(request.cookies.get(sessions.LOGIN_CSRF_COOKIE))


def field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value[:MAX_FORM_FIELD] if isinstance(value, str) else ""


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    console = state_of(request)
    language = language_of(request)
    session: SessionRow | None = getattr(request.state, "session", None)
    new_login_token = None
    csrf = session.csrf_token if session is not None else _login_token(request)
    if csrf is None:
        csrf = new_login_token = sessions.new_token()

    def t(key: str, **values: object) -> str:
        return i18n.translate(language, key, **values)

    html = console.templates.get_template(template).render(
        t=t, lang=language, session=session, csrf_token=csrf, path=_here(request), **context
    )
    response = HTMLResponse(html, status_code)
    if new_login_token is not None:
        set_cookie(response, console, sessions.LOGIN_CSRF_COOKIE, console.signer.sign(new_login_token))
    return response


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def set_cookie(response: Response, console: ConsoleState, name: str, value: str) -> None:
    # No Max-Age: the browser forgets it when it closes; the session's own limits are kept server-side.
    response.set_cookie(name, value, httponly=True, samesite="strict", secure=console.settings.secure_cookies, path="/")


def see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status.HTTP_303_SEE_OTHER)


def safe_next(value: str) -> str:
    """A path of this console to go back to; anything else (another site, a scheme) is the inbox."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value and len(value) <= 2000:
        return value
    return "/inbox"


async def record(request: Request, session: SessionRow, action: str, target: str) -> None:
    console = state_of(request)
    await actions.record(console.runtime.pool, console.settings.source, session.operator.email, action, target)


# Login, logout, language, password


@pages.get("/login")
async def login_page(request: Request) -> Response:
    return render(request, "login.html", notice=request.query_params.get("notice"))


@pages.post("/login")
async def login(request: Request) -> Response:
    console = state_of(request)
    form = await checked_form(request, None)
    email, password = field(form, "email"), field(form, "password")
    # Behind the TLS proxy the TCP peer is the proxy: keyed on it, one guesser would lock every operator out.
    client = rate_limit_key(of_request(request, console.settings.trusted_proxies))
    async with console.runtime.pool.acquire() as conn, conn.transaction():
        outcome = await accounts.login(conn, email, password, client, console.limits)
        token = await sessions.open_session(conn, outcome.operator, console.lifetime) if outcome.operator else None
    if outcome.operator is None or token is None:
        if outcome.refused == "rate_limited":
            limited = render(
                request, "login.html", 429, error="login_rate_limited", seconds=outcome.retry_after, email=email
            )
            limited.headers["Retry-After"] = str(outcome.retry_after)
            return limited
        return render(request, "login.html", 401, error="login_failed", email=email)
    await actions.record(
        console.runtime.pool, console.settings.source, outcome.operator.email, "operator.logged_in", "console"
    )
    response = see_other("/account/password" if outcome.operator.must_change else "/inbox")
    set_cookie(response, console, sessions.SESSION_COOKIE, console.signer.sign(token))
    response.delete_cookie(sessions.LOGIN_CSRF_COOKIE, path="/")
    return response


@pages.post("/logout")
async def logout(request: Request, session: OperatorDep) -> Response:
    console = state_of(request)
    await checked_form(request, session)
    token = console.signer.unsign(request.cookies.get(sessions.SESSION_COOKIE))
    if token:
        async with console.runtime.pool.acquire() as conn:
            await sessions.close_session(conn, token)
    await record(request, session, "operator.logged_out", "console")
    response = see_other("/login?notice=logged_out")
    response.delete_cookie(sessions.SESSION_COOKIE, path="/")
    return response


@pages.post("/language")
async def switch_language(request: Request) -> Response:
    console = state_of(request)
    session = None
    token = console.signer.unsign(request.cookies.get(sessions.SESSION_COOKIE))
    if token:
        async with console.runtime.pool.acquire() as conn:
            session = await sessions.current(conn, token, console.idle)
    form = await checked_form(request, session)
    response = see_other(safe_next(field(form, "next")))
    response.set_cookie(
        sessions.LANGUAGE_COOKIE,
        i18n.chosen(field(form, "lang")),
        max_age=365 * 86400,
        httponly=True,
        samesite="strict",
        secure=console.settings.secure_cookies,
        path="/",
    )
    return response


@pages.get("/account/password")
async def password_page(request: Request, session: OperatorDep) -> Response:
    return render(request, "password.html", must_change=session.operator.must_change)


@pages.post("/account/password")
async def change_password(request: Request, session: OperatorDep) -> Response:
    console = state_of(request)
    form = await checked_form(request, session)
    async with console.runtime.pool.acquire() as conn:
        problem = await accounts.change_password(
            conn, session.operator, field(form, "current_password"), field(form, "new_password")
        )
    if problem:
        return render(request, "password.html", 422, error=problem, must_change=session.operator.must_change)
    await record(request, session, "operator.password_changed", "console")
    return see_other("/inbox?notice=password_changed")


# The inbox


@pages.get("/")
async def home(_: OperatorDep) -> Response:
    return see_other("/inbox")


@pages.get("/inbox")
async def inbox(
    request: Request,
    session: OperatorDep,
    state: Annotated[str, Query()] = "open",
    q: Annotated[str, Query(max_length=MAX_SEARCH)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    notice: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    console = state_of(request)
    state = "closed" if state == "closed" else "open"
    text = q.strip() or None
    # Targets separate their parts with ":" and " ", which no address contains, so the audit service finds
    # an address searched for as the person the view concerns.
    await record(request, session, "messages.listed", f"contact.messages:{state}" + (f" search:{text}" if text else ""))
    page = await console.contact.messages(
        session.operator.email, state=state, text=text, cursor=cursor, limit=console.settings.console_page_size
    )
    next_url = None
    if page.next_cursor:
        next_url = "/inbox?" + urlencode({"state": state, "q": text or "", "cursor": page.next_cursor})
    return render(
        request,
        "inbox.html",
        page=page,
        state=state,
        q=text or "",
        next_url=next_url,
        first_url=("/inbox?" + urlencode({"state": state, "q": text or ""})) if cursor else None,
        notice=notice if notice in i18n.TEXTS else None,
    )


@pages.get("/inbox/{message_id}")
async def thread(
    request: Request,
    session: OperatorDep,
    message_id: uuid.UUID,
    notice: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    return await _thread_page(request, session, message_id, notice=notice if notice in i18n.TEXTS else None)


async def _thread_page(
    request: Request, session: SessionRow, message_id: uuid.UUID, status_code: int = 200, **context: Any
) -> Response:
    console = state_of(request)
    await record(request, session, "message.viewed", f"contact.message:{message_id}")
    message = await console.contact.message(session.operator.email, message_id)
    return render(request, "thread.html", status_code, message=message, **context)


@pages.post("/inbox/{message_id}/reply")
async def reply(request: Request, session: OperatorDep, message_id: uuid.UUID) -> Response:
    console = state_of(request)
    form = await checked_form(request, session)
    body = field(form, "body").strip()
    if not body:
        return await _thread_page(request, session, message_id, 422, error="reply_empty", draft="")
    if field(form, "action") != "send":
        return await _thread_page(request, session, message_id, preview=body, draft=body)
    await record(request, session, "message.replied", f"contact.message:{message_id}")
    try:
        await console.contact.reply(session.operator.email, message_id, body)
    except UpstreamError as exc:
        if exc.status == status.HTTP_409_CONFLICT:
            return await _thread_page(request, session, message_id, 409, error="conflict", draft=body)
        raise
    return see_other(f"/inbox/{message_id}?notice=reply_sent")


@pages.post("/inbox/{message_id}/close")
async def close(request: Request, session: OperatorDep, message_id: uuid.UUID) -> Response:
    console = state_of(request)
    await checked_form(request, session)
    await record(request, session, "message.closed", f"contact.message:{message_id}")
    await console.contact.close(session.operator.email, message_id)
    return see_other(f"/inbox/{message_id}?notice=message_closed")


@pages.post("/inbox/{message_id}/reopen")
async def reopen(request: Request, session: OperatorDep, message_id: uuid.UUID) -> Response:
    console = state_of(request)
    await checked_form(request, session)
    await record(request, session, "message.reopened", f"contact.message:{message_id}")
    await console.contact.reopen(session.operator.email, message_id)
    return see_other(f"/inbox/{message_id}?notice=message_reopened")


# Orders


@pages.get("/orders")
async def orders_search(
    request: Request,
    session: OperatorDep,
    q: Annotated[str, Query(max_length=254)] = "",
) -> Response:
    console = state_of(request)
    text = q.strip()
    if not text:
        return render(request, "orders.html", q="", orders=None)
    # An address, or else the order's id at the shop.
    await record(request, session, "orders.searched", f"orders.search:{text}")
    by_email = "@" in text
    try:
        found = await console.orders.search(
            session.operator.email, email=text if by_email else None, order_id=None if by_email else text
        )
    except UpstreamError as exc:
        if exc.status != status.HTTP_422_UNPROCESSABLE_CONTENT:
            raise
        return render(request, "orders.html", 422, q=text, orders=None, error="orders_bad_query")
    return render(request, "orders.html", q=text, orders=found)


@pages.get("/orders/{order_id}")
async def order_page(request: Request, session: OperatorDep, order_id: uuid.UUID) -> Response:
    console = state_of(request)
    await record(request, session, "order.viewed", f"orders.order:{order_id}")
    order = await console.orders.order(session.operator.email, order_id)
    return render(request, "order.html", order=order, revealed=None)


@pages.post("/orders/{order_id}/reveal")
async def reveal_keys(request: Request, session: OperatorDep, order_id: uuid.UUID) -> Response:
    """The keys in full, on this answer only (nothing keeps them: the page is no-store, and a reload asks
    again). Each reveal is an audited action of its own."""
    console = state_of(request)
    await checked_form(request, session)
    await record(request, session, "license_keys.revealed", f"orders.order:{order_id}")
    order = await console.orders.order(session.operator.email, order_id)
    revealed = await console.orders.license_keys(session.operator.email, order_id)
    return render(request, "order.html", order=order, revealed=revealed)


# Administration


@pages.get("/operators")
async def operators(request: Request, session: AdminDep) -> Response:
    console = state_of(request)
    await record(request, session, "operators.listed", "console.operators")
    async with console.runtime.pool.acquire() as conn:
        accounts_ = await store.list_operators(conn)
    return render(request, "operators.html", operators=accounts_)


@pages.get("/static/console.css")
async def stylesheet() -> Response:
    return Response(
        (STATIC / "console.css").read_bytes(),
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600"},
    )
