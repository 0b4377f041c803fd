"""Who published a message, as RabbitMQ vouches for it: the AMQP `user_id` property.

The broker refuses a publish whose `user_id` is not the login of its connection (none of our users has the
`impersonator` tag that would allow it), so a message carrying one was published by that user, whatever its
CloudEvent `source` claims. The outbox relay sets it on every event (`AmqpPublisher`).

A copy a service makes of a message it took (a retry, a dead letter, a dead letter listed or replayed) is
published by the service's own login, so its `user_id` is the service's: the copy carries the original's
publisher in the `x-spm-publisher` header, and that header is believed only on a message whose `user_id` is
the login of the one reading it (it made the copy itself). Anyone else may write the header; nobody else can
write that `user_id`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

PUBLISHER_HEADER = "x-spm-publisher"
# The login aiormq uses where an AMQP URL names none.
DEFAULT_LOGIN = "guest"


def amqp_login(url: str) -> str:
    """The user an AMQP URL logs in as."""
    return unquote(urlsplit(url).username or "") or DEFAULT_LOGIN


def publisher_of(user_id: str | None, headers: Mapping[str, Any], login: str | None) -> str | None:
    """The login that published a message with this `user_id` and these headers, read by a connection logged in
    as `login`: the `x-spm-publisher` header on a copy this login made itself (empty there: the original had
    none), else the `user_id`; None when nothing vouches for one."""
    if not user_id:
        return None
    if login is not None and user_id == login and PUBLISHER_HEADER in headers:
        value = headers[PUBLISHER_HEADER]
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        return text or None
    return user_id


def carried(publisher: str | None) -> dict[str, str]:
    """The header a copy published by the reader's own login carries, so the copy keeps its original's
    publisher (`publisher_of`)."""
    return {PUBLISHER_HEADER: publisher or ""}
