"""The audit service's SQL, nothing else."""

from __future__ import annotations

from typing import Any

import asyncpg

COLUMNS = (
    "seq",
    "event_id",
    "event_type",
    "source",
    "event_time",
    "purpose",
    "subject_ref",
    "payload",
    "prev_hash",
    "hash",
)


async def lock_head(conn: asyncpg.Connection) -> tuple[int, str]:
    row = await conn.fetchrow("SELECT seq, hash FROM chain_head FOR UPDATE")
    return int(row["seq"]), str(row["hash"])


async def append(conn: asyncpg.Connection, entries: list[dict[str, Any]]) -> None:
    await conn.executemany(
        f"INSERT INTO entries ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))})",
        [tuple(entry[c] for c in COLUMNS) for entry in entries],
    )
    last = entries[-1]
    await conn.execute("UPDATE chain_head SET seq = $1, hash = $2", last["seq"], last["hash"])
