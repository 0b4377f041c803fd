"""One-click unsubscribe (RFC 8058): the pages a recipient sees, and the withdrawal of consent itself."""

from __future__ import annotations

from typing import Literal

from spm_common import outbox
from spm_common.db import Connection
from spm_common.envelope import new_event

from notifier import store
from notifier.events import NOTIFICATION_UNSUBSCRIBED, Unsubscribed
from notifier.mail import new_environment
from notifier.policy import Category
from notifier.settings import Settings
from notifier.tokens import recipient_ref

PURPOSE_OF: dict[str, Literal["free-upgrade", "product-news"]] = {"upgrades": "free-upgrade", "news": "product-news"}
_pages = new_environment()


async def unsubscribe(conn: Connection, email: str, category: Category, settings: Settings) -> bool:
    """Stop `category` mail to the address; announce it once (the orders service records the withdrawal)."""
    ref = recipient_ref(email, settings.recipient_key())
    first = await store.add_unsubscribe(conn, ref, category)
    if first:
        await outbox.add(
            conn,
            new_event(
                NOTIFICATION_UNSUBSCRIBED,
                settings.source,
                Unsubscribed(email=email, category=category),
                purpose=PURPOSE_OF[category],
            ),
        )
    return first


def page(kind: Literal["confirm", "done", "invalid"], category: str | None = None, token: str | None = None) -> str:
    """A small bilingual page (Vietnamese first, then English); the address itself is never shown."""
    return _pages.get_template(f"page-unsubscribe-{kind}.html").render(category=category, token=token)
