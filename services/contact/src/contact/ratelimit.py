"""Rate limits on the contact form: per client and for everyone, in fixed windows counted in Postgres.

Counting in the database (not in memory) makes a limit hold across restarts and across replicas. A client
is known by an HMAC of its address under the service's secret: the counters let one tell two clients apart
within a window, and nothing more. A hit refused for its client does not count against the global limit, so
one noisy client cannot close the form for everyone.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from spm_common.db import Connection

from contact import store

GLOBAL_BUCKET = "*"


@dataclass(frozen=True)
class Limit:
    requests: int
    window_seconds: int

    def window(self, now: float) -> tuple[datetime, datetime]:
        start = math.floor(now / self.window_seconds) * self.window_seconds
        return _utc(start), _utc(start + self.window_seconds)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds until the window that refused the hit ends


def client_bucket(address: str, key: bytes) -> str:
    return "c:" + hmac.new(key, address.encode(), hashlib.sha256).hexdigest()


async def hit(conn: Connection, bucket: str, per_client: Limit, overall: Limit, now: float) -> Decision:
    """Count one attempt by `bucket` and say whether it is within both limits."""
    client_start, client_end = per_client.window(now)
    global_start, global_end = overall.window(now)
    # The window's length is part of the bucket, so changing a limit's window starts its counts afresh.
    client_hits, global_hits = await store.count_hit(
        conn,
        f"{bucket}/{per_client.window_seconds}",
        client_start,
        client_end,
        per_client.requests,
        f"{GLOBAL_BUCKET}/{overall.window_seconds}",
        global_start,
        global_end,
    )
    if client_hits > per_client.requests:
        return Decision(False, _seconds_until(client_end, now))
    if global_hits is not None and global_hits > overall.requests:
        return Decision(False, _seconds_until(global_end, now))
    return Decision(True)


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _seconds_until(end: datetime, now: float) -> int:
    return max(1, math.ceil(end.timestamp() - now))
