"""The e-mails purchasers see, through the real notifier and the in-process SMTP server.

The requests themselves, with their templates and exact context keys, are asserted in the other tests of
this folder; here the real notifier renders and sends them. A world of its own keeps this test's mail
apart from the session's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from notifier.app import create as create_notifier
from notifier.settings import Settings as NotifierSettings
from orders_helpers import fetch, new_address, order_data, release, started
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import World, new_world, running


@pytest.fixture(scope="module")
async def own_world(smtp: SmtpServer) -> AsyncIterator[World]:
    instance = new_world()
    instance.smtp_port = smtp.port
    await instance.create()
    yield instance
    await instance.destroy()


async def test_confirmation_recovery_and_upgrade_mail_reach_the_purchaser(own_world: World, smtp: SmtpServer) -> None:
    email = new_address()
    async with AsyncExitStack() as stack:
        orders = await stack.enter_async_context(started(own_world))
        await stack.enter_async_context(running(create_notifier(own_world.settings(NotifierSettings))))
        data = order_data(email, quantity=2, locale="en")
        await orders.publish("order.placed", data)
        [confirmation] = await smtp.wait_to(email, timeout=5)
        keys = [r["license_key"] for r in await fetch(own_world, "SELECT license_key FROM orders.license_keys")]
        text = confirmation.message.get_body(("plain",)).get_content()
        assert data["order_id"] in text and all(key in text for key in keys)
        assert "https://spmgroup.vn/dl/dict-pro.exe" in text

        async with orders.client() as client:
            assert (await client.post("/v1/license-recovery", json={"email": email})).status_code == 202
        recovered = (await smtp.wait_to(email, count=2, timeout=5))[-1]
        assert all(key in recovered.message.get_body(("plain",)).get_content() for key in keys)

        await orders.publish("upgrade.released", release("SPM-DICT-PRO", new_registration=True))
        notice = (await smtp.wait_to(email, count=3, timeout=5))[-1].message
        assert notice["List-Unsubscribe"] and "One-Click" in notice["List-Unsubscribe-Post"]
