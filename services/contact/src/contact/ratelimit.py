"""Rate limits on the contact form: per client and for everyone, in fixed windows counted in Postgres.

Counting in the database (not in memory) makes a limit hold across restarts and across replicas. A client
is known by an HMAC, under the service's secret, of its address as `spm_common.clientaddr` finds it behind
the trusted proxies (an IPv6 client by its /64): the counters let one tell two clients apart within a
window, and nothing more. A hit refused for its client does not count against the global limit, so
one noisy client cannot close the form for everyone.
"""

from __future__ import annotations

import functools
import hmac
import math
from datetime import UTC, datetime
from typing import NamedTuple

GLOBAL_BUCKET = "*"


# Tuples rather than frozen dataclasses: one of each is made for every attempt, and a frozen dataclass sets
# each field through object.__setattr__. With each window's bounds made once and the HMAC in one call, an
# attempt's limits and buckets cost ~4 µs instead of ~7.
class Limit(NamedTuple):
    requests: int
    window_seconds: int

    def window(self, now: float) -> tuple[datetime, datetime]:
        return _window(self.window_seconds, math.floor(now / self.window_seconds))


@functools.lru_cache(maxsize=64)  # every attempt within a window has the same bounds
def _window(seconds: int, index: int) -> tuple[datetime, datetime]:
    return _utc(index * seconds), _utc((index + 1) * seconds)


class Decision(NamedTuple):
    allowed: bool
    retry_after: int = 0  # whole seconds until the window that refused the hit ends


def client_bucket(address: str, key: bytes) -> str:
    return "c:" + hmac.digest(key, address.encode(), "sha256").hex()


class Buckets(NamedTuple):
    """Where one attempt is counted: its client's bucket and the global one, each in its current window.
    The window's length is part of the name, so changing a limit's window starts its counts afresh."""

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
    there, so that a client refused for its own limit does not use up an address's requests."""
    client_start, client_end = per_client.window(now)
    overall_start, overall_end = overall.window(now)
    return Buckets(
        f"{client}/{per_client.window_seconds}",
        client_start,
        client_end,
        per_client.requests,
        f"{overall_bucket}/{overall.window_seconds}",
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


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _seconds_until(end: datetime, now: float) -> int:
    return max(1, math.ceil(end.timestamp() - now))
