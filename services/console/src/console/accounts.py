"""Operator accounts: argon2id password hashes, one-time passwords, and failed logins counted per account
and per client (`spm_common.ratelimit`, as every rate limit) so a guesser is slowed down whichever it varies."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from email_validator import EmailNotValidError, validate_email
from spm_common import ratelimit
from spm_common.addresses import normalise_address
from spm_common.db import Connection

from console import store
from console.store import OperatorRow

Role = Literal["support", "admin"]
ROLES: tuple[Role, ...] = ("support", "admin")
MIN_PASSWORD_LENGTH = 12
# argon2-cffi's defaults are RFC 9106's second recommendation (argon2id, 64 MiB, 3 passes, 4 lanes).
HASHER = PasswordHasher()
# Verified when the address is unknown, so a wrong address takes as long as a wrong password.
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))


def valid_address(email: str) -> str:
    """The address in the one spelling of `normalise_address`; ValueError (saying why) if it is no e-mail
    address. Where an operator account is made, from the command line or the web."""
    try:
        return normalise_address(validate_email(email.strip(), check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


def one_time_password() -> str:
    """Printed once by `operator add` / `operator reset`; it must be replaced at the first login."""
    return secrets.token_urlsafe(18)


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def password_problem(password: str) -> str | None:
    """Why a new password is refused (an i18n key), or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return "password_too_short"
    if len(password) > 1024:
        return "password_too_long"
    return None


@dataclass(frozen=True)
class Login:
    """The outcome of a login attempt: the operator, or why not (and for how long, when rate-limited)."""

    operator: OperatorRow | None
    refused: Literal["credentials", "rate_limited"] | None = None
    retry_after: int = 0


@dataclass(frozen=True)
class LoginLimits:
    per_account: int
    per_client: int
    window_seconds: int
    key: bytes

    def counted(self, email: str, client: str) -> list[tuple[str, ratelimit.Limit]]:
        """The account's bucket and the client's, each with its limit. Keyed hashes: the counters hold
        neither addresses nor anything a dictionary attack could reverse."""
        return [
            (
                ratelimit.keyed("login-account", normalise_address(email), self.key),
                ratelimit.Limit(self.per_account, self.window_seconds),
            ),
            (ratelimit.keyed("login-client", client, self.key), ratelimit.Limit(self.per_client, self.window_seconds)),
        ]


async def login(conn: Connection, email: str, password: str, client: str, limits: LoginLimits) -> Login:
    now = time.time()
    counted = limits.counted(email, client)
    # Failures are counted, and looked at before the password is: once either bucket has used up its limit,
    # no password is tried until its window ends.
    limited = await ratelimit.exhausted(conn, counted, now)
    if not limited.allowed:
        return Login(None, "rate_limited", limited.retry_after)
    operator = await store.operator_by_email(conn, normalise_address(email))
    if operator is None or operator.disabled_at is not None or not _verify(operator.password_hash, password):
        if operator is None:
            _verify(_DUMMY_HASH, password)
        await ratelimit.count(conn, counted, now)
        return Login(None, "credentials")
    await ratelimit.forget(conn, [counted[0][0]])  # the account's failures; the client's stay
    if HASHER.check_needs_rehash(operator.password_hash):
        await store.set_password(conn, operator.id, hash_password(password), operator.must_change)
    return Login(operator)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def add_operator(conn: Connection, email: str, role: Role) -> tuple[OperatorRow, str] | None:
    """A new account with a one-time password (returned once, stored only as its hash); None if it exists."""
    password = one_time_password()
    operator = await store.insert_operator(conn, normalise_address(email), role, hash_password(password))
    return (operator, password) if operator else None


async def reset_password(conn: Connection, email: str) -> str | None:
    """A new one-time password for the account (its sessions end); None if there is no such account."""
    operator = await store.operator_by_email(conn, normalise_address(email))
    if operator is None:
        return None
    password = one_time_password()
    await store.set_password(conn, operator.id, hash_password(password), must_change=True)
    await store.end_sessions_of(conn, operator.id)
    return password


async def change_password(conn: Connection, operator: OperatorRow, current: str, new: str) -> str | None:
    """Set the operator's own password; returns why not (an i18n key), or None."""
    if not _verify(operator.password_hash, current):
        return "password_current_wrong"
    problem = password_problem(new)
    if problem:
        return problem
    if new == current:
        return "password_same"
    await store.set_password(conn, operator.id, hash_password(new), must_change=False)
    return None
