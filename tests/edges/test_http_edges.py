"""Bad input at every HTTP edge: schemathesis from each service's own OpenAPI document, and the bodies it cannot make."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from audit.app import create as create_audit
from audit.settings import Settings as AuditSettings
from contact.app import create as create_contact
from contact.settings import Settings as ContactSettings
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from orders import webhooks
from orders.app import create as create_orders
from orders.settings import Settings as OrdersSettings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from spm_common.testing.world import OPERATOR_TOKEN, WEBHOOK_SECRET, World, running

SERVICES: dict[str, tuple[Callable[[Any], FastAPI], type]] = {
    "contact": (create_contact, ContactSettings),
    "orders": (create_orders, OrdersSettings),
    "audit": (create_audit, AuditSettings),
    "notifier": (create_notifier, NotifierSettings),
}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 50
BASE_URL = "http://testserver"
AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def _httpx_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """schemathesis serializes for requests; httpx names a raw body `content`, and deprecates cookies set per
    request (on a shared client), so they go as the Cookie header they would have become."""
    out = {k: v for k, v in kwargs.items() if k in ("method", "url", "headers", "params")}
    if kwargs.get("cookies"):
        cookie = "; ".join(f"{name}={value}" for name, value in kwargs["cookies"].items())
        out["headers"] = {**(out.get("headers") or {}), "Cookie": cookie}
    if "json" in kwargs:
        out["content"] = json.dumps(kwargs["json"]).encode()
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        out["content"] = data.encode() if isinstance(data, str) else data
    return out


def _fuzz(schema: Any, loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient) -> list[str]:
    """Run every operation's cases (from a worker thread) against the app running on the test's loop."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        strategies = []
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                strategies.append(operation.as_strategy(generation_mode=mode))
            except Exception:  # noqa: S112 - an operation with nothing to negate has no negative strategy
                continue

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(case=st.one_of(*strategies))
        def check(case: Any) -> None:
            headers = {**AUTH, **(case.headers or {})} if "Authorization" not in (case.headers or {}) else None
            kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
            request = _httpx_kwargs(kwargs)
            if request["url"].endswith("/webhooks/orders"):
                # Signed, so the generated bodies reach the parser rather than stopping at the signature check.
                body = request.get("content", b"")
                signature = webhooks.header(WEBHOOK_SECRET, int(time.time()), body)
                request["headers"] = {**(request.get("headers") or {}), "x-spm-signature": signature}
            response = asyncio.run_coroutine_threadsafe(client.request(**request), loop).result(30)
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except (Exception, BaseExceptionGroup) as error:  # schemathesis reports a FailureGroup
            failures.append(f"{operation.label}: {error}")
    return failures


@pytest.mark.timeout(300)
@pytest.mark.parametrize("service", list(SERVICES))
async def test_schemathesis_finds_no_server_error_and_no_schema_break(world: World, service: str) -> None:
    create, settings_cls = SERVICES[service]
    app = create(world.settings(settings_cls))
    async with running(app) as client:
        schema = schemathesis.openapi.from_dict(app.openapi())
        failures = await asyncio.to_thread(_fuzz, schema, asyncio.get_running_loop(), client)
    assert not failures, "\n\n".join(failures)


# Hand-written bodies schemathesis cannot generate: each must be refused with a 4xx and change nothing.
DEEP = b"[" * 10_000 + b"]" * 10_000
BAD_BODIES: dict[str, tuple[bytes, str]] = {
    "invalid utf-8": (b'{"email": "\xff\xfe@example.com", "url": "/\xc3\x28"}', "application/json"),
    "duplicate keys": (b'{"email": "dup@example.com", "url": "/a", "email": {}, "url": {}}', "application/json"),
    "deep nesting": (DEEP, "application/json"),
    "deep nesting in a field": (b'{"email": ' + DEEP + b', "url": ' + DEEP + b"}", "application/json"),
    "wrong content type": (b"email=someone%40example.com&url=%2F", "text/plain"),
    "form instead of json": (b"email=someone%40example.com&url=%2F", "application/x-www-form-urlencoded"),
    "nan": (b'{"email": NaN, "url": NaN, "amount": NaN}', "application/json"),
    "infinity": (b'{"email": Infinity, "url": -Infinity}', "application/json"),
    "huge float": (b'{"email": 1e400, "url": 1e400}', "application/json"),
    "huge integer": (b'{"email": ' + b"9" * 5000 + b', "url": 1}', "application/json"),
    "not an object": (b'"just a string"', "application/json"),
    "truncated": (b'{"email": "a@example.com", "url": "/', "application/json"),
    "empty": (b"", "application/json"),
}
# The tables each edge would write to (or the rows of them it would write), counted before and after.
WRITES = {
    "contact": ["contact.messages", "contact.outbox"],
    "orders": ["orders.orders", "orders.purchasers", "orders.outbox", "orders.rate_limits"],
    "audit": ["audit.pageviews", "audit.entries"],
    # Not every outbox row: the sender may be finishing e-mails an earlier test in this world asked for.
    "notifier": ["notifier.unsubscribes", "notifier.outbox WHERE event_type = 'notification.unsubscribed'"],
}
POST_ENDPOINTS = {
    "contact": ["/v1/messages"],
    "orders": ["/v1/license-recovery", "/v1/webhooks/orders"],
    "audit": ["/v1/pageviews"],
    "notifier": ["/v1/unsubscribe?token=not-a-valid-token-at-all"],
}


async def _counts(world: World, tables: list[str]) -> dict[str, int]:
    admin = await world.admin()
    try:
        return {table: await admin.fetchval(f"SELECT count(*) FROM {table}") for table in tables}
    finally:
        await admin.close()


@pytest.mark.parametrize("service", list(SERVICES))
async def test_bodies_no_generator_makes_are_refused_and_change_nothing(world: World, service: str) -> None:
    create, settings_cls = SERVICES[service]
    async with running(create(world.settings(settings_cls))) as client:
        before = await _counts(world, WRITES[service])
        answers: dict[str, int] = {}
        for path in POST_ENDPOINTS[service]:
            for name, (body, content_type) in BAD_BODIES.items():
                headers = {"Content-Type": content_type}
                if path == "/v1/webhooks/orders":
                    # Signed, so the body itself is what gets judged rather than the missing signature.
                    headers["X-SPM-Signature"] = webhooks.header(WEBHOOK_SECRET, int(time.time()), body)
                response = await client.post(path, content=body, headers=headers)
                answers[f"{path} {name}"] = response.status_code
        await asyncio.sleep(0.5)  # anything written in the background would show by now
        after = await _counts(world, WRITES[service])
    wrong = {case: code for case, code in answers.items() if not 400 <= code < 500}
    assert not wrong, wrong
    assert after == before
