"""Helpers of the notifier's tests (on sys.path through `pythonpath` in the root pyproject.toml)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import asyncpg
from spm_common.envelope import CloudEvent, new_event
from spm_common.notifications import NOTIFICATION_REQUESTED, NotificationRequested, Recipient
from spm_common.testing.world import AMQP_URL
from spm_common.topology import Topology

FAST = {
    "notifier_retry_base_seconds": 0.2,
    "notifier_retry_max_seconds": 0.6,
    "notifier_poll_seconds": 0.1,
    "notifier_lease_seconds": 5.0,
    "notifier_smtp_connections": 2,
    "smtp_timeout_seconds": 5.0,
    "notifier_public_url": "https://notify.example.com",
}


def address(label: str = "someone") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.com"


def request_event(
    template: str,
    email: str,
    context: dict[str, Any] | None = None,
    *,
    purpose: str | None = None,
    locale: str = "en",
    name: str | None = "Trần Thị Thử",
    source: str | None = None,
    **extra: Any,
) -> CloudEvent:
    """A request as the service allowed to make it would publish it, unless `source` says otherwise."""
    purposes = {
        "contact-ack": "answer-message",
        "contact-reply": "answer-message",
        "order-confirmation": "fulfil-order",
        "license-recovery": "license-recovery",
        "upgrade-notice": "free-upgrade",
        "product-news": "product-news",
    }
    request = NotificationRequested(
        purpose=purpose or purposes[template],  # type: ignore[arg-type]
        template=template,
        locale=locale,  # type: ignore[arg-type]
        recipient=Recipient(email=email, name=name),
        context=context if context is not None else SAMPLE_CONTEXTS[template],
        **extra,
    )
    source = source or ("urn:spm:contact" if request.purpose == "answer-message" else "urn:spm:orders")
    return new_event(NOTIFICATION_REQUESTED, source, request, purpose=request.purpose)


SAMPLE_CONTEXTS: dict[str, dict[str, Any]] = {
    "contact-ack": {"subject": "Hỏi về giấy phép"},
    "contact-reply": {"subject": "Hỏi về giấy phép", "reply_body": "Chào bạn,\n\nMã của bạn vẫn dùng được.\n<b>x</b>"},
    "order-confirmation": {
        "order_id": "FS-2026-000123",
        "currency": "USD",
        "total": "49.00",
        "items": [
            {
                "product_name": "SPM Dictionary Pro",
                "quantity": 1,
                "download_url": "https://spmgroup.vn/dl/dict-5.1.0.exe",
                "license_keys": ["7KQ2M-XW4PD-9TRHC-B3NVA-L6ZEY"],
            }
        ],
    },
    "license-recovery": {
        "products": [
            {
                "product_name": "SPM Dictionary Pro",
                "download_url": "https://spmgroup.vn/dl/dict-5.1.0.exe",
                "license_keys": ["7KQ2M-XW4PD-9TRHC-B3NVA-L6ZEY"],
            }
        ]
    },
    "upgrade-notice": {
        "product_name": "SPM Dictionary Pro",
        "title": "SPM Dictionary Pro 5.2",
        "version": "5.2.0",
        "notes_url": "https://spmgroup.vn/dict/5.2",
        "download_url": "https://spmgroup.vn/dl/dict-5.2.0.exe",
        "license_key": "ABCD2-EFGH3-JKLM4-NPQR5-STUV6",
    },
    "product-news": {
        "title": "Từ điển SPM mới cho học sinh",
        "summary": "Một sản phẩm mới.\n\nRa mắt tháng 12.",
        "url": "https://spmgroup.vn/new",
    },
    "privacy-confirm": {
        "kind": "access",
        "confirm_url": "https://contact.example.com/v1/privacy-requests/confirm?token=pr1.abc.def",
        "expires_at": "2026-12-06 21:00 UTC",
    },
    "privacy-extension": {"kind": "erasure", "reason": "Một hệ thống cần thêm thời gian.", "due_date": "2027-01-05"},
    "privacy-access": {
        "answers": [{"service": "Đơn hàng", "summary": "2 orders found.", "counts": {"orders": 2}}],
        "attached": True,
    },
    "privacy-erasure": {"answers": [{"service": "Tin nhắn", "summary": "3 messages erased.", "counts": {}}]},
}


async def eventually(probe: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll until `probe` returns something truthy; return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


async def delivery_of(db: asyncpg.Connection, event: CloudEvent) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM notifier.deliveries WHERE request_event_id = $1", event.id)


async def settled(db: asyncpg.Connection, event: CloudEvent, status: str, timeout: float = 10.0) -> asyncpg.Record:
    async def probe() -> asyncpg.Record | None:
        row = await delivery_of(db, event)
        return row if row is not None and row["status"] == status else None

    return await eventually(probe, timeout)


async def dead_letters(exchange: str, count: int, timeout: float = 15.0) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take `count` messages from the notifier's dead-letter queue, waiting for them to arrive."""
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Topology(exchange, "notifier").dead_letter_queue_name, ensure=True)

        async def probe() -> bool:
            while len(taken) < count and (message := await queue.get(no_ack=True, fail=False)) is not None:
                taken.append(message)
            return len(taken) >= count

        await eventually(probe, timeout)
    return taken
