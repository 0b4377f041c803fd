"""The audit service's SQL, nothing else."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import date, datetime

from asyncpg import Record
from spm_common.db import Connection

from audit.signing import Checkpoint

# The trail ----------------------------------------------------------------------------------------------


async def lock_head(conn: Connection) -> tuple[int, str, datetime]:
    """The head of the chain, locked until the transaction ends, and the database's time once it is ours
    (so `recorded_at` follows the order of the chain even across replicas)."""
    row = await conn.fetchrow("SELECT seq, hash, now FROM lock_head()")
    assert row is not None
    return int(row["seq"]), str(row["hash"]), row["now"]


async def append(conn: Connection, records: Sequence[tuple[object, ...]], columns: Sequence[str]) -> None:
    await conn.copy_records_to_table("entries", records=records, columns=list(columns))
    last = records[-1]
    # The service's login may not update the head: the function moves it, forward only, onto an entry.
    await conn.execute("SELECT advance_head($1, $2)", last[columns.index("seq")], last[columns.index("hash")])


async def head(conn: Connection) -> tuple[int, str]:
    row = await conn.fetchrow("SELECT seq, hash FROM chain_head")
    assert row is not None
    return int(row["seq"]), str(row["hash"])


async def entries_after(conn: Connection, seq: int, limit: int) -> list[Record]:
    return await conn.fetch("SELECT * FROM entries WHERE seq > $1 ORDER BY seq LIMIT $2", seq, limit)


async def entry_at(conn: Connection, seq: int) -> Record | None:
    return await conn.fetchrow("SELECT * FROM entries WHERE seq = $1", seq)


async def last_checkpoint(conn: Connection) -> tuple[int, str] | None:
    row = await conn.fetchrow("SELECT seq, hash FROM checkpoints ORDER BY seq DESC LIMIT 1")
    return (int(row["seq"]), str(row["hash"])) if row else None


async def last_trusted_checkpoint(conn: Connection, trusted: Collection[str]) -> tuple[int, str] | None:
    """The newest checkpoint whose signature holds under one of the `trusted` public keys; the others (made up
    by someone who can write the database, or signed by a key no longer trusted) are passed over."""
    async with conn.transaction():
        cursor = conn.cursor(
            "SELECT seq, hash, signed_time, public_key, signature FROM checkpoints"
            " WHERE signature IS NOT NULL AND public_key = ANY($1::text[]) ORDER BY seq DESC, id DESC",
            list(trusted),
        )
        async for r in cursor:
            if Checkpoint(r["seq"], r["hash"], r["signed_time"], r["public_key"], r["signature"]).signed_by(trusted):
                return int(r["seq"]), str(r["hash"])
    return None


async def checkpoints_between(conn: Connection, first: int, last: int) -> dict[int, str]:
    rows = await conn.fetch("SELECT seq, hash FROM checkpoints WHERE seq BETWEEN $1 AND $2", first, last)
    return {int(r["seq"]): str(r["hash"]) for r in rows}


async def add_checkpoint(conn: Connection, checkpoint: Checkpoint) -> None:
    await conn.execute(
        "INSERT INTO checkpoints (seq, hash, signed_time, public_key, signature) VALUES ($1, $2, $3, $4, $5)",
        checkpoint.seq,
        checkpoint.hash,
        checkpoint.time,
        checkpoint.public_key,
        checkpoint.signature,
    )


async def signed_checkpoints(conn: Connection) -> list[Checkpoint]:
    rows = await conn.fetch(
        "SELECT seq, hash, signed_time, public_key, signature FROM checkpoints"
        " WHERE signature IS NOT NULL ORDER BY seq, id"
    )
    return [Checkpoint(r["seq"], r["hash"], r["signed_time"], r["public_key"], r["signature"]) for r in rows]


async def find_entries(
    conn: Connection,
    *,
    event_type: str | None,
    subject_refs: Sequence[str] | None,
    since: datetime | None,
    until: datetime | None,
    after: int,
    limit: int,
) -> list[Record]:
    return await conn.fetch(
        "SELECT * FROM entries WHERE seq > $1"
        " AND ($2::text IS NULL OR event_type = $2)"
        " AND ($3::text[] IS NULL OR subject_ref = ANY($3::text[]))"
        " AND ($4::timestamptz IS NULL OR recorded_at >= $4)"
        " AND ($5::timestamptz IS NULL OR recorded_at < $5)"
        " ORDER BY seq LIMIT $6",
        after,
        event_type,
        None if subject_refs is None else list(subject_refs),
        since,
        until,
        limit,
    )


# Subject keys (crypto-shredding) --------------------------------------------------------------------------


# A batch's keys are a few hundred primary-key look-ups. Planned as a sequential scan (a cached plan made while
# the table was small, or no statistics where autovacuum is off) each row was compared with every look-up:
# 5.6 ms a batch at 20,000 keys, ~600 us of Postgres an order in bench.pipeline. Kept to the primary key.
_BY_PRIMARY_KEY = "SET LOCAL enable_seqscan = off"
_AS_USUAL = "SET LOCAL enable_seqscan = on"


async def subject_keys(conn: Connection, lookups: Sequence[bytes]) -> dict[bytes, bytes]:
    if not lookups:
        return {}
    await conn.execute(_BY_PRIMARY_KEY)
    rows = await conn.fetch("SELECT lookup, key FROM subject_keys WHERE lookup = ANY($1::bytea[])", list(lookups))
    await conn.execute(_AS_USUAL)
    return {bytes(r["lookup"]): bytes(r["key"]) for r in rows}


async def add_subject_keys(conn: Connection, keys: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """Store new keys; returns, for any lookup that had a key already, the stored key (none was replaced). The
    statement's snapshot predates its own inserts, so the SELECT sees exactly the keys that were there."""
    if not keys:
        return {}
    await conn.execute(_BY_PRIMARY_KEY)
    rows = await conn.fetch(
        "WITH added AS (INSERT INTO subject_keys (lookup, key) SELECT * FROM unnest($1::bytea[], $2::bytea[])"
        "  ON CONFLICT (lookup) DO NOTHING RETURNING 1)"
        " SELECT lookup, key FROM subject_keys WHERE lookup = ANY($1::bytea[])",
        list(keys),
        list(keys.values()),
    )
    await conn.execute(_AS_USUAL)
    return {bytes(r["lookup"]): bytes(r["key"]) for r in rows}


async def delete_subject_key(conn: Connection, lookup: bytes) -> bytes | None:
    key = await conn.fetchval("DELETE FROM subject_keys WHERE lookup = $1 RETURNING key", lookup)
    return bytes(key) if key is not None else None


async def legacy_ref_erased(conn: Connection, ref: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM erased_legacy_refs WHERE subject_ref = $1", ref))


async def erase_legacy_ref(conn: Connection, ref: str) -> None:
    await conn.execute("INSERT INTO erased_legacy_refs (subject_ref) VALUES ($1) ON CONFLICT DO NOTHING", ref)


async def entries_about(conn: Connection, refs: Sequence[str]) -> list[Record]:
    """What a person may know of the entries that concern them: type, time and purpose (over the index on
    (subject_ref, seq))."""
    return await conn.fetch(
        "SELECT subject_ref, event_type, recorded_at, purpose FROM entries WHERE subject_ref = ANY($1::text[])"
        " ORDER BY seq",
        list(refs),
    )


async def count_entries_about(conn: Connection, ref: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM entries WHERE subject_ref = $1", ref))


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


async def insert_pageviews(conn: Connection, rows: Sequence[tuple[object, ...]]) -> None:
    if rows:
        await conn.copy_records_to_table(
            "pageviews", records=rows, columns=["viewed_at", "path", "referrer_host", "visitor_hash"]
        )


# Trends -------------------------------------------------------------------------------------------------
# A visitor is a hash that changes with the daily salt, so "visitors" are distinct (visitor, day) pairs:
# unique per day, never the same person followed across days. That makes every figure a sum over days of
# per-day figures, which is what lets a closed day be kept as its aggregates alone (`close_days`): a trend
# adds the aggregates of closed days to the same figures computed from the rows of the open ones. Groups are
# keyed by a text array: [path], [referrer host], or [path, next path] for a move. Any group seen by fewer
# than $3 visitors over the days asked is folded into one row whose key is NULL ("other"), whose visitors are
# those of its groups added up.

KINDS = ("page", "referrer", "entry", "exit", "move")
# The views of the UTC days $1 to $2 (dates, both included), each with its day.
_OPEN_VIEWS = (
    "SELECT *, (viewed_at AT TIME ZONE 'UTC')::date AS day FROM pageviews"
    " WHERE viewed_at >= ($1::date::timestamp AT TIME ZONE 'UTC')"
    " AND viewed_at < (($2::date + 1)::timestamp AT TIME ZONE 'UTC')"
)
# Visits over the CTE `v`: a visitor's views in time order, a new visit after 30 minutes without one; each step
# knows the page after it and its place from either end of the visit.
_STEPS = (
    " marked AS (SELECT day, visitor_hash, path, viewed_at, id,"
    "  CASE WHEN viewed_at - lag(viewed_at) OVER w <= interval '30 minutes' THEN 0 ELSE 1 END AS starts"
    "  FROM v WINDOW w AS (PARTITION BY visitor_hash ORDER BY viewed_at, id)),"
    " numbered AS (SELECT *, sum(starts) OVER (PARTITION BY visitor_hash ORDER BY viewed_at, id) AS visit"
    "  FROM marked),"
    " steps AS (SELECT day, visitor_hash, visit, path,"
    "  lead(path) OVER s AS next_path,"
    "  row_number() OVER s AS from_start,"
    "  row_number() OVER (PARTITION BY visitor_hash, visit ORDER BY viewed_at DESC, id DESC) AS from_end"
    "  FROM numbered WINDOW s AS (PARTITION BY visitor_hash, visit ORDER BY viewed_at, id))"
)
# Each kind's groups of each day over the CTE `v` (and `steps`): day, kind, key, count, visitors.
_GROUP = "SELECT day, '{kind}' AS kind, {key} AS key, count(*) AS count, count(DISTINCT visitor_hash) AS visitors"
_GROUPS = {
    "page": _GROUP.format(kind="page", key="ARRAY[path]") + " FROM v GROUP BY day, path",
    "referrer": _GROUP.format(kind="referrer", key="ARRAY[referrer_host]")
    + " FROM v WHERE referrer_host IS NOT NULL GROUP BY day, referrer_host",
    "entry": _GROUP.format(kind="entry", key="ARRAY[path]") + " FROM steps WHERE from_start = 1 GROUP BY day, path",
    "exit": _GROUP.format(kind="exit", key="ARRAY[path]") + " FROM steps WHERE from_end = 1 GROUP BY day, path",
    "move": _GROUP.format(kind="move", key="ARRAY[path, next_path]")
    + " FROM steps WHERE next_path IS NOT NULL AND next_path <> path GROUP BY day, path, next_path",
}
_NEEDS_STEPS = frozenset({"entry", "exit", "move"})


async def daily(conn: Connection, first: date, last: date) -> list[Record]:
    """Views and distinct visitors of each UTC day from `first` to `last`, days without views included."""
    return await conn.fetch(
        f"WITH v AS ({_OPEN_VIEWS}),"
        " per_day AS (SELECT day, count(*) AS views, count(DISTINCT visitor_hash) AS visitors FROM v GROUP BY day"
        "  UNION ALL SELECT day, views, visitors FROM pageview_days WHERE day BETWEEN $1 AND $2)"
        " SELECT d::date AS day, coalesce(sum(p.views), 0)::bigint AS views,"
        "  coalesce(sum(p.visitors), 0)::bigint AS visitors"
        " FROM generate_series($1::date::timestamp, $2::date::timestamp, interval '1 day') AS d"
        " LEFT JOIN per_day p ON p.day = d::date"
        " GROUP BY d ORDER BY d",
        first,
        last,
    )


async def groups(conn: Connection, kind: str, first: date, last: date, k: int, limit: int) -> list[Record]:
    """The `limit` biggest groups of `kind` over the days `first` to `last` by count (views, visits or moves),
    then the "other" row (key NULL) of the groups seen by fewer than `k` visitors, if any."""
    if kind not in KINDS:
        raise ValueError(kind)
    steps = f",{_STEPS}" if kind in _NEEDS_STEPS else ""
    return await conn.fetch(
        f"WITH v AS ({_OPEN_VIEWS}){steps},"
        f" per_day AS ({_GROUPS[kind]}"
        "  UNION ALL SELECT day, kind, key, count, visitors FROM pageview_groups"
        "  WHERE kind = $5 AND day BETWEEN $1 AND $2),"
        " summed AS (SELECT key, sum(count) AS count, sum(visitors) AS visitors FROM per_day GROUP BY key),"
        " folded AS (SELECT CASE WHEN visitors >= $3 THEN key END AS key, count, visitors FROM summed),"
        " g AS (SELECT key, sum(count)::bigint AS count, sum(visitors)::bigint AS visitors FROM folded GROUP BY key)"
        " SELECT * FROM (SELECT * FROM g WHERE key IS NOT NULL ORDER BY count DESC, key LIMIT $4) AS named"
        " UNION ALL SELECT * FROM g WHERE key IS NULL",
        first,
        last,
        k,
        limit,
        kind,
    )


async def oldest_view(conn: Connection) -> datetime | None:
    moment: datetime | None = await conn.fetchval("SELECT min(viewed_at) FROM pageviews")
    return moment


async def close_days(conn: Connection, since: datetime, until: datetime) -> int:
    """Replace the page views of [`since`, `until`) (whole UTC days) by their days' aggregates, in one
    statement: the rows deleted are exactly the rows counted, whatever another replica does at the same time
    (it finds them gone). A row that arrives late for a day already closed is added to that day's aggregates
    by a later call (its visitor may then be counted twice that day). Returns how many views were closed."""
    groups_sql = " UNION ALL ".join(_GROUPS[kind] for kind in KINDS)
    closed = await conn.fetchval(
        "WITH gone AS (DELETE FROM pageviews WHERE viewed_at >= $1 AND viewed_at < $2 RETURNING *),"
        " v AS (SELECT *, (viewed_at AT TIME ZONE 'UTC')::date AS day FROM gone),"
        f"{_STEPS},"
        " days AS (INSERT INTO pageview_days (day, views, visitors)"
        "  SELECT day, count(*), count(DISTINCT visitor_hash) FROM v GROUP BY day"
        "  ON CONFLICT (day) DO UPDATE SET views = pageview_days.views + EXCLUDED.views,"
        "   visitors = pageview_days.visitors + EXCLUDED.visitors RETURNING 1),"
        f" grouped AS (INSERT INTO pageview_groups (day, kind, key, count, visitors) {groups_sql}"
        "  ON CONFLICT (kind, day, key) DO UPDATE SET count = pageview_groups.count + EXCLUDED.count,"
        "   visitors = pageview_groups.visitors + EXCLUDED.visitors RETURNING 1)"
        # Every data-modifying CTE runs to completion whether or not the query reads it.
        " SELECT count(*) FROM gone",
        since,
        until,
    )
    return int(closed or 0)
