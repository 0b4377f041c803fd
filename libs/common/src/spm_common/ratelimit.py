"""Rate limits: fixed windows counted in Postgres (the table `rate_windows`, shared migration 0006), the one
implementation behind every limit: the contact form and privacy requests, license recovery, operator logins.

Counting in the database (not in memory) makes a limit hold across restarts and across replicas. A bucket
names no one: `keyed(use, value, key)` is an HMAC, under the service's secret, of a client's address (as
`spm_common.clientaddr` finds it behind the trusted proxies, an IPv6 client by its /64), of an e-mail address
(in the one spelling of `spm_common.addresses`) or of an account; the counters let one tell two of them apart
within a window, and nothing more. A limit's window length is part of each row's bucket (`Limit.bucket`), so
changing it starts its counts afresh.

Two ways to count: `hit` counts an attempt and says whether it is within the limit (license recovery);
`exhausted` only looks, and `count` records what happened (operator logins count failures, looked at before
each attempt). The contact form counts many attempts at once in its own statement (`contact.store.admit`), on
the same table, with `buckets` and `decide` from here.
"""

from __future__ import annotations

import functools
import hmac
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from spm_common.db import Connection

GLOBAL_BUCKET = "*"


# Tuples rather than frozen dataclasses: one of each is made for every attempt, and a frozen dataclass sets
# each field through object.__setattr__. With each window's bounds made once and the HMAC in one call, an
# attempt's limits and buckets cost ~4 µs instead of ~7.
class Limit(NamedTuple):
    requests: int
    window_seconds: int

    def window(self, now: float) -> tuple[datetime, datetime]:
        return _window(self.window_seconds, math.floor(now / self.window_seconds))

    def bucket(self, name: str) -> str:
        """The row name of `name` under this limit: its window length is part of it."""
        return f"{name}/{self.window_seconds}"


@functools.lru_cache(maxsize=64)  # every attempt within a window has the same bounds
def _window(seconds: int, index: int) -> tuple[datetime, datetime]:
    return _utc(index * seconds), _utc((index + 1) * seconds)


class Decision(NamedTuple):
    allowed: bool
    retry_after: int = 0  # whole seconds until the window that refused the attempt ends


def keyed(use: str, value: str, key: bytes) -> str:
    """A bucket name for `value` in one use ("c" the contact form's clients, "recovery-email", "login-account"):
    the use, then an HMAC-SHA256 under `key` of the use and the value, so one value has unrelated names in two
    uses and the table holds nothing a dictionary attack could reverse without the key."""
    return f"{use}:" + hmac.digest(key, f"{use}\x00{value}".encode(), "sha256").hex()


# Counting one bucket at a time ------------------------------------------------------------------------------


async def hit(conn: Connection, name: str, limit: Limit, now: float) -> Decision:
    """Count one attempt in `name`'s current window; refused when it is over the limit (a refused attempt
    counts too, so hammering does not open the window earlier)."""
    [hits] = await count(conn, [(name, limit)], now)
    return _decision(hits > limit.requests, limit, now)


async def count(conn: Connection, counted: Sequence[tuple[str, Limit]], now: float) -> list[int]:
    """Count one in each bucket's current window (distinct buckets); the new counts, in the order given. Rows
    are locked in one order (sorted), so two transactions counting the same buckets cannot deadlock."""
    rows = [(limit.bucket(name), *limit.window(now)) for name, limit in counted]
    result = await conn.fetch(
        "INSERT INTO rate_windows AS r (bucket, window_start, hits, expires_at)"
        " SELECT b, s, 1, e FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS x(b, s, e) ORDER BY b"
        " ON CONFLICT (bucket, window_start) DO UPDATE SET hits = r.hits + 1"
        " RETURNING bucket, hits",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
    )
    hits = {row["bucket"]: int(row["hits"]) for row in result}
    return [hits[bucket] for bucket, _, _ in rows]


async def exhausted(conn: Connection, counted: Sequence[tuple[str, Limit]], now: float) -> Decision:
    """Without counting: refused when any bucket has used up its limit in its current window."""
    buckets = [limit.bucket(name) for name, limit in counted]
    found = await conn.fetch(
        "SELECT bucket, hits FROM rate_windows"
        " WHERE (bucket, window_start) IN (SELECT * FROM unnest($1::text[], $2::timestamptz[]))",
        buckets,
        [limit.window(now)[0] for _, limit in counted],
    )
    hits = {row["bucket"]: int(row["hits"]) for row in found}
    for bucket, (_, limit) in zip(buckets, counted, strict=True):
        if hits.get(bucket, 0) >= limit.requests:
            return _decision(True, limit, now)
    return Decision(True)


async def forget(conn: Connection, names: Sequence[str]) -> int:
    """Delete every window of these buckets, whatever their window length (an operator who logged in; an
    address erased). Returns the rows deleted."""
    if not names:
        return 0
    status = await conn.execute("DELETE FROM rate_windows WHERE split_part(bucket, '/', 1) = ANY($1::text[])", names)
    return int(status.split()[-1])


async def sweep(conn: Connection) -> int:
    """Delete the windows that have ended (each service's housekeeping calls it)."""
    status = await conn.execute("DELETE FROM rate_windows WHERE expires_at < now()")
    return int(status.split()[-1])


# Two limits on one attempt (the contact form, privacy requests) ---------------------------------------------


class Buckets(NamedTuple):
    """Where one attempt is counted: its client's bucket and the overall one, each in its current window."""

    client: str
    client_start: datetime
    client_end: datetime
    client_limit: int
    overall: str
    overall_start: datetime
    overall_end: datetime
    overall_limit: int


def buckets(client: str, per_client: Limit, overall: Limit, now: float, overall_bucket: str = GLOBAL_BUCKET) -> Buckets:
    """`overall_bucket` names the second bucket: everyone's by default; privacy requests count per address
    there, so that a client refused for its own limit does not use up an address's requests. A hit refused for
    its client does not count against the overall limit, so one noisy client cannot close a form for everyone."""
    client_start, client_end = per_client.window(now)
    overall_start, overall_end = overall.window(now)
    return Buckets(
        per_client.bucket(client),
        client_start,
        client_end,
        per_client.requests,
        overall.bucket(overall_bucket),
        overall_start,
        overall_end,
        overall.requests,
    )


def decide(counted: Buckets, client_hits: int, global_hits: int | None, now: float) -> Decision:
    """Whether the attempt just counted is within both limits (`global_hits` is None where it was not
    counted globally, its client being over its own limit)."""
    if client_hits > counted.client_limit:
        return Decision(False, _seconds_until(counted.client_end, now))
    if global_hits is not None and global_hits > counted.overall_limit:
        return Decision(False, _seconds_until(counted.overall_end, now))
    return Decision(True)


def _decision(refused: bool, limit: Limit, now: float) -> Decision:
    return Decision(False, _seconds_until(limit.window(now)[1], now)) if refused else Decision(True)


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _seconds_until(end: datetime, now: float) -> int:
    return max(1, math.ceil(end.timestamp() - now))
