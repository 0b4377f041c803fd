"""The console's SQL, nothing else: operators, sessions, login failure counters."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from spm_common.db import Connection


@dataclass(frozen=True)
class OperatorRow:
    id: uuid.UUID
    email: str
    role: str
    password_hash: str
    must_change: bool
    disabled_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class SessionRow:
    operator: OperatorRow
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime


_OPERATOR = "o.id, o.email, o.role, o.password_hash, o.must_change, o.disabled_at, o.created_at"


def _operator(row: asyncpg.Record) -> OperatorRow:
    return OperatorRow(**{name: row[name] for name in OperatorRow.__dataclass_fields__})


# Operators


async def insert_operator(conn: Connection, email: str, role: str, password_hash: str) -> OperatorRow | None:
    """None where an account with that address exists already."""
    row = await conn.fetchrow(
        "INSERT INTO operators AS o (id, email, role, password_hash) VALUES ($1, $2, $3, $4)"
        f" ON CONFLICT (email) DO NOTHING RETURNING {_OPERATOR}",
        uuid.uuid4(),
        email,
        role,
        password_hash,
    )
    return _operator(row) if row else None


async def operator_by_email(conn: Connection, email: str) -> OperatorRow | None:
    row = await conn.fetchrow(f"SELECT {_OPERATOR} FROM operators o WHERE o.email = $1", email)
    return _operator(row) if row else None


async def operator_by_id(conn: Connection, operator_id: uuid.UUID) -> OperatorRow | None:
    row = await conn.fetchrow(f"SELECT {_OPERATOR} FROM operators o WHERE o.id = $1", operator_id)
    return _operator(row) if row else None


async def list_operators(conn: Connection) -> list[OperatorRow]:
    return [_operator(row) for row in await conn.fetch(f"SELECT {_OPERATOR} FROM operators o ORDER BY o.email")]


async def set_password(conn: Connection, operator_id: uuid.UUID, password_hash: str, must_change: bool) -> None:
    await conn.execute(
        "UPDATE operators SET password_hash = $2, must_change = $3 WHERE id = $1",
        operator_id,
        password_hash,
        must_change,
    )


async def disable_operator(conn: Connection, email: str) -> bool:
    """Disable the account and end its sessions; False where there is no such account."""
    operator_id = await conn.fetchval(
        "UPDATE operators SET disabled_at = coalesce(disabled_at, now()) WHERE email = $1 RETURNING id", email
    )
    if operator_id is None:
        return False
    await conn.execute("DELETE FROM sessions WHERE operator_id = $1", operator_id)
    return True


async def end_sessions_of(conn: Connection, operator_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM sessions WHERE operator_id = $1", operator_id)


# Sessions


async def insert_session(
    conn: Connection, token_hash: str, operator_id: uuid.UUID, csrf_token: str, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO sessions (token_hash, operator_id, csrf_token, expires_at) VALUES ($1, $2, $3, $4)",
        token_hash,
        operator_id,
        csrf_token,
        expires_at,
    )


async def touch_session(conn: Connection, token_hash: str, idle_seconds: float) -> SessionRow | None:
    """The live session with that token, its idle clock restarted; None where it is unknown, expired (in all
    or by idleness) or its operator disabled. Expired sessions met here are deleted."""
    row = await conn.fetchrow(
        "UPDATE sessions s SET last_seen_at = now() FROM operators o"
        " WHERE s.token_hash = $1 AND o.id = s.operator_id AND o.disabled_at IS NULL"
        " AND s.expires_at > now() AND s.last_seen_at > now() - make_interval(secs => $2)"
        f" RETURNING s.csrf_token, s.created_at, s.last_seen_at, {_OPERATOR}",
        token_hash,
        idle_seconds,
    )
    if row is None:
        await conn.execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)
        return None
    return SessionRow(_operator(row), row["csrf_token"], row["created_at"], row["last_seen_at"])


async def delete_session(conn: Connection, token_hash: str) -> None:
    await conn.execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)


async def sweep_sessions(conn: Connection, idle_seconds: float) -> int:
    result = await conn.execute(
        "DELETE FROM sessions WHERE expires_at <= now() OR last_seen_at <= now() - make_interval(secs => $1)",
        idle_seconds,
    )
    return int(result.split()[-1])
