"""The connection type handlers and stores take: a plain connection or one borrowed from a pool."""

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# Rows come back as asyncpg.Record (no connection sets a record_class): `fetchrow` says it may be None.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# What the database raises when it is away or a connection dies under a statement: a loop tries again later,
# a request answers 503. InternalClientError is asyncpg's "cannot switch to state ..." on a pooled connection
# whose server ended it a moment before its next use; not caught, it ended the notifier's marking task
# silently (outcomes never recorded, the e-mails sent again once their leases ran out).
DB_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# Run first in the transaction of a claim from a queue table (an outbox, the notifier's deliveries) that reads
# the partial index of its waiting rows in order, up to a batch. When Postgres expects few waiting rows it plans
# a bitmap scan, which reads every entry of that index on every claim, and the entries of the rows claimed since
# the last vacuum are still there: ~1 ms a claim once 40,000 events have gone through, most of Postgres's CPU an
# event at low rates, growing until autovacuum comes (never, where it is off). An index scan stops at the batch
# and marks the entries of finished rows dead as it passes them, so later claims skip them.
INDEX_SCAN_CLAIM = "SET LOCAL enable_bitmapscan = off"
