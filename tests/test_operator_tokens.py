"""Operator tokens in every service that takes one: shorter than 32 characters is refused at start, and every
operator route locks out a client after repeated wrong tokens (the guard itself: libs/common's
test_operator_guard and services/audit's test_operator_lockout)."""

from __future__ import annotations

import importlib
import re
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from spm_common.settings import SERVICES
from spm_common.testing.world import OPERATOR_TOKEN

# The console takes the token too, to call the others' operator APIs; its own pages need an operator's login.
TAKES_A_TOKEN = (*SERVICES, "console")
WITH_OPERATOR_ROUTES = SERVICES
WRONG = {"Authorization": "Bearer a-wrong-token-that-is-long-enough-to-be-one"}
RIGHT = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def settings_of(service: str, **values: Any) -> Any:
    cls = importlib.import_module(f"{service}.settings").Settings
    return cls(amqp_url="amqp://127.0.0.1:5672/", **values)


@pytest.mark.parametrize("service", TAKES_A_TOKEN)
@pytest.mark.parametrize("length", [1, 16, 31])
def test_a_short_operator_token_is_refused_at_start(service: str, length: int) -> None:
    short = "t" * length
    with pytest.raises(ValidationError) as refused:
        settings_of(service, operator_token=short)
    assert "at least 32 characters" in str(refused.value)
    assert short not in str(refused.value) or length == 1
    assert settings_of(service, operator_token="t" * 32).operator_token is not None


def operator_operations(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every operation the OpenAPI document says answers 401, path parameters filled in."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            if "401" in operation.get("responses", {}):
                found.append((method.upper(), re.sub(r"\{[^}]+\}", "1", path)))
    return found


@pytest.mark.asyncio
@pytest.mark.parametrize("service", WITH_OPERATOR_ROUTES)
async def test_every_operator_operation_refuses_a_wrong_token(service: str) -> None:
    """Checked before anything else the route needs (no database or broker here)."""
    settings = settings_of(service, operator_token=OPERATOR_TOKEN, operator_auth_failures=10_000)
    app = importlib.import_module(f"{service}.app").create(settings)
    operations = operator_operations(app)
    assert operations, f"{service} has no operator operation"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        for method, path in operations:
            answer = await client.request(method, path, headers=WRONG)
            assert answer.status_code == 401, (service, method, path, answer.status_code)


@pytest.mark.asyncio
@pytest.mark.parametrize("service", WITH_OPERATOR_ROUTES)
async def test_repeated_wrong_tokens_lock_a_client_out_of_every_service(service: str) -> None:
    """The token is checked before the route runs: no database or broker is needed to see it."""
    settings = settings_of(service, operator_token=OPERATOR_TOKEN, operator_auth_failures=3)
    app = importlib.import_module(f"{service}.app").create(settings)
    method, path = operator_operations(app)[0]
    guesser = httpx.ASGITransport(app=app, client=("198.51.100.20", 40000))
    colleague = httpx.ASGITransport(app=app, client=("198.51.100.21", 40000))
    async with (
        httpx.AsyncClient(transport=guesser, base_url="http://testserver") as bad,
        httpx.AsyncClient(transport=colleague, base_url="http://testserver") as good,
    ):
        for _ in range(3):
            assert (await bad.request(method, path, headers=WRONG)).status_code == 401
        locked = await bad.request(method, path, headers=RIGHT)
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
        assert OPERATOR_TOKEN not in locked.text
        # Another client still gets past the token (to whatever the route then answers without its servers).
        assert (await good.request(method, path, headers=WRONG)).status_code == 401
