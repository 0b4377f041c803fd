"""Bad input at every HTTP edge: schemathesis from each service's own OpenAPI document, and the bodies it cannot make."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
import schemathesis.engine
from audit.app import create as create_audit
from audit.settings import Settings as AuditSettings
from console.app import create as create_console
from console.settings import Settings as ConsoleSettings
from contact.app import create as create_contact
from contact.settings import Settings as ContactSettings
from fastapi import FastAPI
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from orders import webhooks
from orders.app import create as create_orders
from orders.settings import Settings as OrdersSettings
from schemathesis.engine import events
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER
from spm_common.testing.world import OPERATOR_TOKEN, WEBHOOK_SECRET, World, running, serving

SERVICES: dict[str, tuple[Callable[[Any], FastAPI], type]] = {
    "contact": (create_contact, ContactSettings),
    "orders": (create_orders, OrdersSettings),
    "audit": (create_audit, AuditSettings),
    "notifier": (create_notifier, NotifierSettings),
}
# Every phase schemathesis has (as `schemathesis run` does): the documented examples, the coverage phase's
# boundary and just-past-boundary values of every keyword (the largest integers, NUL bytes, odd dates...),
# fuzzing with valid and invalid data, and stateful sequences along the links it infers (a message, then its
# replies). Fixed seed: the same cases every run, so a failure is one that can be replayed.
EXAMPLES_PER_OPERATION = 60
STATEFUL_STEPS = 6
SCHEMATHESIS = {
    "seed": 20261205,
    "workers": 1,
    "continue-on-failure": True,
    "cache": {"enabled": False},  # nothing carried from one run to the next, nor left in the working tree
    "request-timeout": 30,
    "headers": {"Authorization": f"Bearer {OPERATOR_TOKEN}"},
    "generation": {"mode": "all", "max-examples": EXAMPLES_PER_OPERATION, "database": "none"},
    "phases": {
        "examples": {"enabled": True, "fill-missing": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": True, "max-steps": STATEFUL_STEPS},
    },
    "checks": {
        "enabled": False,
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
    },
}


class _WebhookSignature(requests.auth.AuthBase):
    """Signs the exact bytes sent to the orders webhook, so generated bodies reach its parser rather than
    stopping at the signature check."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        request.headers["X-SPM-Signature"] = webhooks.header(
            WEBHOOK_SECRET, int(time.time()), body.encode() if isinstance(body, str) else body
        )
        return request


def _sign_webhook_calls(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.operation.path == "/v1/webhooks/orders":
        kwargs["auth"] = _WebhookSignature()


def _run_every_phase(spec: dict[str, Any], base_url: str) -> tuple[list[str], dict[str, int]]:
    """schemathesis's engine (what its command line runs), from a worker thread: the failures it found, each
    with the request that reproduces it, and how many cases each phase sent."""
    config = schemathesis.Config.from_dict({**SCHEMATHESIS, "base-url": base_url})
    schema = schemathesis.openapi.from_dict(spec, config=config)
    failures: list[str] = []
    cases: dict[str, int] = {}
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            phase = str(event.phase.value)
            cases[phase] = cases.get(phase, 0) + len(event.recorder.cases)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(
                            f"{phase} {event.recorder.label}: {check.name}: {failure.title}\n"
                            f"  {check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.phase} {event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            failures.append(f"fatal: {event.exception!r}")
    return failures, cases


# The operators' console documents only its probes and metrics (its pages are HTML forms behind a login and a
# CSRF token, tested in its own tests): those get every phase too.
FUZZED = {**SERVICES, "console": (create_console, ConsoleSettings)}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("service", list(FUZZED))
async def test_schemathesis_finds_no_server_error_and_no_schema_break(own_world: World, service: str) -> None:
    create, settings_cls = FUZZED[service]
    app = create(own_world.settings(settings_cls))
    hook = schemathesis.hook("before_call")(_sign_webhook_calls)
    try:
        async with serving(app) as base_url:
            failures, cases = await asyncio.to_thread(_run_every_phase, app.openapi(), base_url)
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(hook)
    print(f"{service}: cases sent per phase {cases}")
    assert not failures, "\n\n".join(dict.fromkeys(failures))


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
    "orders": ["orders.orders", "orders.purchasers", "orders.outbox", "orders.rate_windows"],
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


async def _settled_counts(world: World, tables: list[str]) -> dict[str, int]:
    """The counts once nothing else changes them: a service just started may still be consuming what earlier
    tests in this world published (the contact relay's privacy-policy event reaching the audit trail)."""
    counts = await _counts(world, tables)
    for _ in range(20):
        await asyncio.sleep(0.5)
        again = await _counts(world, tables)
        if again == counts:
            return counts
        counts = again
    return counts


@pytest.mark.parametrize("service", list(SERVICES))
async def test_bodies_no_generator_makes_are_refused_and_change_nothing(world: World, service: str) -> None:
    create, settings_cls = SERVICES[service]
    async with running(create(world.settings(settings_cls))) as client:
        before = await _settled_counts(world, WRITES[service])
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
