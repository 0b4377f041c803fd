"""Sessions in a signed, HttpOnly, SameSite=Strict cookie; the token's SHA-256 is what the database keeps.

The cookie holds a random token and its HMAC under SPM_CONSOLE_SECRET: a cookie the console did not issue is
refused before any database look-up. A session ends after SPM_CONSOLE_IDLE_MINUTES without a request and
SPM_CONSOLE_SESSION_HOURS after the login, whichever comes first, and at logout.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from spm_common.db import Connection

from console import store
from console.store import OperatorRow, SessionRow

SESSION_COOKIE = "spm_console_session"
# Before login there is no session to hold the CSRF token: the login form's token lives in its own cookie.
LOGIN_CSRF_COOKIE = "spm_console_login"
LANGUAGE_COOKIE = "spm_console_lang"


@dataclass(frozen=True)
class Signer:
    key: bytes

    def sign(self, token: str) -> str:
        return f"{token}.{self._mac(token)}"

    def unsign(self, value: str | None) -> str | None:
        """The token of a cookie this console signed, else None."""
        if not value or value.count(".") != 1:
            return None
        token, mac = value.split(".")
        return token if hmac.compare_digest(mac, self._mac(token)) else None

    def _mac(self, token: str) -> str:
        digest = hmac.new(self.key, token.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(conn: Connection, operator: OperatorRow, lifetime: timedelta) -> str:
    """Start a session; returns its token (for the cookie)."""
    token = new_token()
    await store.insert_session(conn, token_hash(token), operator.id, new_token(), datetime.now(UTC) + lifetime)
    return token


async def current(conn: Connection, token: str | None, idle: timedelta) -> SessionRow | None:
    if token is None:
        return None
    return await store.touch_session(conn, token_hash(token), idle.total_seconds())


async def close_session(conn: Connection, token: str) -> None:
    await store.delete_session(conn, token_hash(token))


def same_token(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
