"""HTTP routes of the contact service."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Header, status
from pydantic import BaseModel
from spm_common.http import RuntimeDep
from spm_common.outbox import enqueue

from contact import store
from contact.intake import ContactForm, receive

router = APIRouter(prefix="/v1", tags=["messages"])


class Accepted(BaseModel):
    id: str


def preferred_locale(explicit: str | None, accept_language: str | None) -> Literal["vi", "en"]:
    if explicit in ("vi", "en"):
        return explicit  # type: ignore[return-value]
    for part in (accept_language or "").split(","):
        tag = part.split(";", 1)[0].strip().lower()
        if tag.startswith("vi"):
            return "vi"
        if tag.startswith("en"):
            return "en"
    return "en"


@router.post(
    "/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    summary="Receive a message from the website's contact form",
)
async def post_message(
    form: ContactForm, runtime: RuntimeDep, accept_language: str | None = Header(default=None)
) -> Accepted:
    settings = runtime.settings
    locale = preferred_locale(form.locale, accept_language)
    message, events = receive(form, locale, settings.mail_from, settings.source)
    async with runtime.pool.acquire() as conn, conn.transaction():
        await store.insert_message(conn, message)
        await enqueue(conn, *events)
    return Accepted(id=str(message.id))
