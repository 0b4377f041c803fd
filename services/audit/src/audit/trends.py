"""Trends over page views: per day, top pages and referrers, entry and exit pages, page-to-page moves.

Days are UTC days. A visit is a visitor's run of views with no gap over 30 minutes; because the visitor
hash changes with the daily salt, a visit that crosses midnight counts as two. Any group seen by fewer than
`MIN_VISITORS` visitors is folded into one "other" row, so a rare path cannot single out a person.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from spm_common.db import Connection

from audit import store

MIN_VISITORS = 5
OTHER = "other"
MAX_DAYS = 366


def _bounds(first: date, last: date) -> tuple[datetime, datetime]:
    return datetime.combine(first, time(), UTC), datetime.combine(last + timedelta(days=1), time(), UTC)


async def trends(conn: Connection, first: date, last: date, limit: int = 10) -> dict[str, Any]:
    """Every trend of the UTC days `first` to `last` (both included)."""
    since, until = _bounds(first, last)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        days = await store.daily(conn, first, last)
        pages = await store.top(conn, "path", since, until, MIN_VISITORS, limit)
        referrers = await store.top(conn, "referrer_host", since, until, MIN_VISITORS, limit)
        entries = await store.ends(conn, since, until, MIN_VISITORS, limit, entry=True)
        exits = await store.ends(conn, since, until, MIN_VISITORS, limit, entry=False)
        moves = await store.transitions(conn, since, until, MIN_VISITORS, limit)
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "days": [{"day": r["day"].isoformat(), "views": r["views"], "visitors": r["visitors"]} for r in days],
        "views": sum(r["views"] for r in days),
        "top_pages": [{"path": r["key"] or OTHER, "views": r["views"], "visitors": r["visitors"]} for r in pages],
        "top_referrers": [
            {"host": r["key"] or OTHER, "views": r["views"], "visitors": r["visitors"]} for r in referrers
        ],
        "entry_pages": [{"path": r["key"] or OTHER, "visits": r["visits"], "visitors": r["visitors"]} for r in entries],
        "exit_pages": [{"path": r["key"] or OTHER, "visits": r["visits"], "visitors": r["visitors"]} for r in exits],
        "transitions": [
            {
                "from": r["key"][0] if r["key"] else OTHER,
                "to": r["key"][1] if r["key"] else OTHER,
                "moves": r["moves"],
                "visitors": r["visitors"],
            }
            for r in moves
        ],
    }
