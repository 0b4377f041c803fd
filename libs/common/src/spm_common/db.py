"""The connection type handlers and stores take: a plain connection or one borrowed from a pool."""

from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

# Run first in the transaction of a claim from a queue table (an outbox, the notifier's deliveries) that reads
# the partial index of its waiting rows in order, up to a batch. When Postgres expects few waiting rows it plans
# a bitmap scan, which reads every entry of that index on every claim, and the entries of the rows claimed since
# the last vacuum are still there: ~1 ms a claim once 40,000 events have gone through, most of Postgres's CPU an
# event at low rates, growing until autovacuum comes (never, where it is off). An index scan stops at the batch
# and marks the entries of finished rows dead as it passes them, so later claims skip them.
INDEX_SCAN_CLAIM = "SET LOCAL enable_bitmapscan = off"
