"""SPM_CONTACT_OUTBOX_RELAY=separate: the service stores the events, and only the relay process publishes them."""

from __future__ import annotations

import asyncio

import pytest
from contact import relay
from contact_helpers import eventually, form, started, watching
from spm_common import admin
from spm_common.testing.world import World


async def unpublished(world: World, message_id: str) -> int:
    conn = await world.admin()
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM contact.outbox WHERE published_at IS NULL AND convert_from(body, 'UTF8') LIKE $1",
                f"%{message_id}%",
            )
        )
    finally:
        await conn.close()


async def test_with_the_relay_separate_the_relay_process_publishes_what_the_service_stored(world: World) -> None:
    # The service first: it declares the exchange.
    async with started(world, contact_outbox_relay="separate") as contact, watching(world, "contact.#") as seen:
        assert contact.app.state.runtime.relay is None
        async with contact.client() as client:
            response = await client.post("/v1/messages", json=form())
        assert response.status_code == 202, response.text
        message_id = response.json()["id"]
        await asyncio.sleep(1)  # an in-process relay would have published them by now
        assert await unpublished(world, message_id) == 2  # the fact and the acknowledgement wait
        assert not seen

        async def announced() -> bool:
            return any(e.data.get("message_id") == message_id for e in seen)

        relay_app = relay.create(contact.settings)
        async with relay_app.router.lifespan_context(relay_app):
            await eventually(announced, what="the relay process published the message's event")
            await eventually(lambda: _none_left(world, message_id), what="the relay marked both events published")


async def _none_left(world: World, message_id: str) -> bool:
    return await unpublished(world, message_id) == 0


def test_spm_admin_run_starts_the_separate_relay_beside_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ("contact-relay", "contact.relay") not in admin._processes(["contact"])
    monkeypatch.setenv("SPM_CONTACT_OUTBOX_RELAY", "separate")
    assert admin._processes(["contact", "audit"]) == [
        ("contact", "contact"),
        ("audit", "audit"),
        ("contact-relay", "contact.relay"),
    ]
    assert admin._processes(["audit"]) == [("audit", "audit")]
