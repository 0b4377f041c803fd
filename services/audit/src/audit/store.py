"""The audit service's SQL, nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from spm_common.db import Connection

# The trail ----------------------------------------------------------------------------------------------


async def lock_head(conn: Connection) -> tuple[int, str, datetime]:
    """The head of the chain, locked until the transaction ends, and the database's time once it is ours
    (so `recorded_at` follows the order of the chain even across replicas)."""
    row = await conn.fetchrow("SELECT seq, hash, now FROM lock_head()")
    assert row is not None
    return int(row["seq"]), str(row["hash"]), row["now"]


async def append(conn: Connection, records: Sequence[tuple[Any, ...]], columns: Sequence[str]) -> None:
    await conn.copy_records_to_table("entries", records=records, columns=list(columns))
    last = records[-1]
    # The service's login may not update the head: the function moves it, forward only, onto an entry.
    await conn.execute("SELECT advance_head($1, $2)", last[columns.index("seq")], last[columns.index("hash")])


async def head(conn: Connection) -> tuple[int, str]:
    row = await conn.fetchrow("SELECT seq, hash FROM chain_head")
    assert row is not None
    return int(row["seq"]), str(row["hash"])


async def entries_after(conn: Connection, seq: int, limit: int) -> list[Any]:
    return await conn.fetch("SELECT * FROM entries WHERE seq > $1 ORDER BY seq LIMIT $2", seq, limit)


async def entry_at(conn: Connection, seq: int) -> Any:
    return await conn.fetchrow("SELECT * FROM entries WHERE seq = $1", seq)


async def last_checkpoint(conn: Connection) -> tuple[int, str] | None:
    row = await conn.fetchrow("SELECT seq, hash FROM checkpoints ORDER BY seq DESC LIMIT 1")
    return (int(row["seq"]), str(row["hash"])) if row else None


async def checkpoints_between(conn: Connection, first: int, last: int) -> dict[int, str]:
    rows = await conn.fetch("SELECT seq, hash FROM checkpoints WHERE seq BETWEEN $1 AND $2", first, last)
    return {int(r["seq"]): str(r["hash"]) for r in rows}


async def add_checkpoint(conn: Connection, seq: int, hash_: str) -> None:
    await conn.execute("INSERT INTO checkpoints (seq, hash) VALUES ($1, $2)", seq, hash_)


async def find_entries(
    conn: Connection,
    *,
    event_type: str | None,
    subject_ref: str | None,
    since: datetime | None,
    until: datetime | None,
    after: int,
    limit: int,
) -> list[Any]:
    return await conn.fetch(
        "SELECT * FROM entries WHERE seq > $1"
        " AND ($2::text IS NULL OR event_type = $2)"
        " AND ($3::text IS NULL OR subject_ref = $3)"
        " AND ($4::timestamptz IS NULL OR recorded_at >= $4)"
        " AND ($5::timestamptz IS NULL OR recorded_at < $5)"
        " ORDER BY seq LIMIT $6",
        after,
        event_type,
        subject_ref,
        since,
        until,
        limit,
    )


# Page views ---------------------------------------------------------------------------------------------


async def salt_for(conn: Connection, day: date, candidate: bytes) -> bytes:
    """The day's salt: `candidate` if this call made it, else the one another caller made first."""
    made = await conn.fetchval(
        "INSERT INTO visitor_salts (day, salt) VALUES ($1, $2) ON CONFLICT (day) DO NOTHING RETURNING salt",
        day,
        candidate,
    )
    if made is not None:
        return bytes(made)
    return bytes(await conn.fetchval("SELECT salt FROM visitor_salts WHERE day = $1", day))


async def delete_salts_before(conn: Connection, day: date) -> int:
    status = await conn.execute("DELETE FROM visitor_salts WHERE day < $1", day)
    return int(status.split()[-1])


async def insert_pageviews(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        await conn.copy_records_to_table(
            "pageviews", records=rows, columns=["viewed_at", "path", "referrer_host", "visitor_hash"]
        )


# Trends -------------------------------------------------------------------------------------------------
# Every trend reads the views of [$1, $2) (UTC days). A visitor is a hash that changes with the daily salt,
# so "visitors" are distinct (visitor, day) pairs: unique per day, never the same person followed across
# days. Any group seen by fewer than $3 visitors is folded into one row whose key is NULL ("other").

_VIEWS = "SELECT * FROM pageviews WHERE viewed_at >= $1 AND viewed_at < $2"


async def daily(conn: Connection, first: date, last: date) -> list[Any]:
    """Views and distinct visitors of each UTC day from `first` to `last`, days without views included."""
    return await conn.fetch(
        "SELECT d::date AS day, count(v.visitor_hash) AS views, count(DISTINCT v.visitor_hash) AS visitors"
        " FROM generate_series($1::date::timestamp, $2::date::timestamp, interval '1 day') AS d"
        " LEFT JOIN pageviews v"
        "  ON v.viewed_at >= (d AT TIME ZONE 'UTC') AND v.viewed_at < ((d + interval '1 day') AT TIME ZONE 'UTC')"
        " GROUP BY d ORDER BY d",
        first,
        last,
    )


def _named_then_other(grouped: str, order: str) -> str:
    """The `limit` biggest named groups of the CTE `grouped`, then its "other" row (key NULL), if any."""
    return (
        f" SELECT * FROM (SELECT * FROM {grouped} WHERE key IS NOT NULL ORDER BY {order} LIMIT $4) AS named"
        f" UNION ALL SELECT * FROM {grouped} WHERE key IS NULL"
    )


async def top(conn: Connection, column: str, since: datetime, until: datetime, k: int, limit: int) -> list[Any]:
    """Top values of `column` (path or referrer_host) by views, small groups folded into NULL."""
    if column not in ("path", "referrer_host"):
        raise ValueError(column)
    return await conn.fetch(
        f"WITH v AS ({_VIEWS} AND {column} IS NOT NULL),"
        f" sized AS (SELECT {column} AS key, count(DISTINCT visitor_hash) AS n FROM v GROUP BY {column}),"
        " labelled AS (SELECT CASE WHEN s.n >= $3 THEN s.key END AS key, v.visitor_hash"
        f"  FROM v JOIN sized s ON s.key = v.{column})"
        " , g AS (SELECT key, count(*) AS views, count(DISTINCT visitor_hash) AS visitors FROM labelled GROUP BY key)"
        + _named_then_other("g", "views DESC, key"),
        since,
        until,
        k,
        limit,
    )


# Visits: a visitor's views in time order, a new visit after 30 minutes without one; each step knows the
# page after it and its place from either end of the visit.
_STEPS = (
    f"WITH v AS ({_VIEWS}),"
    " marked AS (SELECT visitor_hash, path, viewed_at, id,"
    "  CASE WHEN viewed_at - lag(viewed_at) OVER w <= interval '30 minutes' THEN 0 ELSE 1 END AS starts"
    "  FROM v WINDOW w AS (PARTITION BY visitor_hash ORDER BY viewed_at, id)),"
    " numbered AS (SELECT *, sum(starts) OVER (PARTITION BY visitor_hash ORDER BY viewed_at, id) AS visit"
    "  FROM marked),"
    " steps AS (SELECT visitor_hash, visit, path,"
    "  lead(path) OVER s AS next_path,"
    "  row_number() OVER s AS from_start,"
    "  row_number() OVER (PARTITION BY visitor_hash, visit ORDER BY viewed_at DESC, id DESC) AS from_end"
    "  FROM numbered WINDOW s AS (PARTITION BY visitor_hash, visit ORDER BY viewed_at, id))"
)


async def ends(conn: Connection, since: datetime, until: datetime, k: int, limit: int, *, entry: bool) -> list[Any]:
    """Entry pages (first of a visit) or exit pages (last of a visit), by visits."""
    position = "from_start" if entry else "from_end"
    return await conn.fetch(
        f"{_STEPS},"
        f" e AS (SELECT path, visitor_hash FROM steps WHERE {position} = 1),"
        " sized AS (SELECT path, count(DISTINCT visitor_hash) AS n FROM e GROUP BY path),"
        " labelled AS (SELECT CASE WHEN s.n >= $3 THEN e.path END AS key, e.visitor_hash"
        "  FROM e JOIN sized s USING (path))"
        " , g AS (SELECT key, count(*) AS visits, count(DISTINCT visitor_hash) AS visitors FROM labelled GROUP BY key)"
        + _named_then_other("g", "visits DESC, key"),
        since,
        until,
        k,
        limit,
    )


async def transitions(conn: Connection, since: datetime, until: datetime, k: int, limit: int) -> list[Any]:
    """Page-to-page moves within a visit (a reload of the same page is not a move)."""
    return await conn.fetch(
        f"{_STEPS},"
        " t AS (SELECT path, next_path, visitor_hash FROM steps"
        "  WHERE next_path IS NOT NULL AND next_path <> path),"
        " sized AS (SELECT path, next_path, count(DISTINCT visitor_hash) AS n FROM t GROUP BY path, next_path),"
        " labelled AS (SELECT CASE WHEN s.n >= $3 THEN ARRAY[t.path, t.next_path] END AS key, t.visitor_hash"
        "  FROM t JOIN sized s USING (path, next_path)),"
        " g AS (SELECT key, count(*) AS moves, count(DISTINCT visitor_hash) AS visitors FROM labelled GROUP BY key)"
        + _named_then_other("g", "moves DESC, key"),
        since,
        until,
        k,
        limit,
    )
