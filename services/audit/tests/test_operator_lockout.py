"""Wrong operator tokens from one client: after SPM_OPERATOR_AUTH_FAILURES of them within the window, that
client gets 429 with Retry-After, even with the right token, until the window has passed; others do not."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from audit.app import create
from fastapi import FastAPI
from spm_common.testing.world import OPERATOR_TOKEN, World

from .conftest import audit_settings

WINDOW_SECONDS = 3
RIGHT = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
WRONG = {"Authorization": "Bearer a-wrong-token-that-is-long-enough-to-be-one"}


@asynccontextmanager
async def clients(app: FastAPI, *addresses: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """The app with its lifespan running, and one HTTP client into it from each address."""
    async with app.router.lifespan_context(app):
        made = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(a, 40000)), base_url="http://testserver")
            for a in addresses
        ]
        try:
            yield made
        finally:
            for client in made:
                await client.aclose()


async def test_repeated_wrong_tokens_lock_the_client_out_until_the_window_passes(world: World) -> None:
    settings = audit_settings(
        world,
        exchange=f"{world.exchange}.{uuid.uuid4().hex[:6]}",  # its own queues: the session's audit keeps its events
        operator_auth_failures=3,
        operator_auth_window_seconds=WINDOW_SECONDS,
    )
    async with clients(create(settings), "198.51.100.7", "198.51.100.8") as (guesser, colleague):
        # Asking without a token guesses nothing and is not counted.
        for _ in range(5):
            assert (await guesser.get("/v1/audit/verify")).status_code == 401
        started = time.monotonic()
        for _ in range(3):
            assert (await guesser.get("/v1/audit/verify", headers=WRONG)).status_code == 401

        locked = await guesser.get("/v1/audit/verify", headers=RIGHT)
        assert locked.status_code == 429
        assert 1 <= int(locked.headers["Retry-After"]) <= WINDOW_SECONDS
        assert locked.json() == {"detail": "too many wrong operator tokens from this client; try again later"}
        assert OPERATOR_TOKEN not in locked.text
        # Another address is not held responsible.
        assert (await colleague.get("/v1/audit/verify", headers=RIGHT)).status_code == 200

        # Refused until the window has passed, then the right token works again.
        deadline = time.monotonic() + 60
        while (status := (await guesser.get("/v1/audit/verify", headers=RIGHT)).status_code) == 429:
            assert time.monotonic() < deadline, "still locked out a minute later"
            await asyncio.sleep(0.2)
        assert status == 200
        assert time.monotonic() - started >= WINDOW_SECONDS - 0.1


async def test_a_right_token_before_the_limit_starts_the_count_afresh(world: World) -> None:
    settings = audit_settings(
        world,
        exchange=f"{world.exchange}.{uuid.uuid4().hex[:6]}",
        operator_auth_failures=3,
        operator_auth_window_seconds=600,
    )
    async with clients(create(settings), "198.51.100.9") as (operator,):
        for _ in range(3):  # a typo or two, then the right token: never locked out
            for _ in range(2):
                assert (await operator.get("/v1/audit/verify", headers=WRONG)).status_code == 401
            assert (await operator.get("/v1/audit/verify", headers=RIGHT)).status_code == 200
