"""A client's X-Request-ID at every service: kept when it is [A-Za-z0-9._-]{1,64}, replaced otherwise. It is
logged and becomes the correlation id of every event the request causes, so nothing else may pass."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from audit.app import create as create_audit
from audit.settings import Settings as AuditSettings
from console.app import create as create_console
from console.settings import Settings as ConsoleSettings
from contact.app import create as create_contact
from contact.settings import Settings as ContactSettings
from fastapi import FastAPI
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from orders.app import create as create_orders
from orders.settings import Settings as OrdersSettings
from spm_common.testing.world import World

SERVICES: dict[str, tuple[Callable[[Any], FastAPI], type]] = {
    "contact": (create_contact, ContactSettings),
    "orders": (create_orders, OrdersSettings),
    "notifier": (create_notifier, NotifierSettings),
    "audit": (create_audit, AuditSettings),
    "console": (create_console, ConsoleSettings),
}
UNUSABLE = [b"alice@example.com", b"two words", b"x" * 65, b"<a@b>\n", b"caf\xc3\xa9", b"4111 1111 1111 1111"]


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_every_service_keeps_only_a_usable_request_id(world: World, service: str) -> None:
    create, settings = SERVICES[service]
    # The probe needs no database nor broker: the app is asked without its lifespan.
    app = create(world.settings(settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        usable = "req-2026.12_05-" + "a" * 49
        kept = await client.get("/healthz", headers={"X-Request-ID": usable})
        assert kept.status_code == 200 and kept.headers["X-Request-ID"] == usable
        for given in UNUSABLE:
            response = await client.get("/healthz", headers={"X-Request-ID": given})
            assert response.status_code == 200
            uuid.UUID(response.headers["X-Request-ID"])  # a fresh one, made up by the service
