"""Trends over page views: per day, top pages and referrers, entry and exit pages, page-to-page moves.

Days are UTC days. A visit is a visitor's run of views with no gap over 30 minutes; because the visitor
hash changes with the daily salt, a visit that crosses midnight counts as two. Any group seen by fewer than
`MIN_VISITORS` visitors is folded into one "other" row, so a rare path cannot single out a person. Closed
days (`pageviews.close_days`) are read from their aggregates, open ones from their rows: the figures are
the same either way.
"""

from __future__ import annotations

from datetime import date
from typing import Any  # the JSON answer of GET /trends, built here (no response model)

from spm_common.db import Connection

from audit import store

MIN_VISITORS = 5
OTHER = "other"
MAX_DAYS = 366


async def trends(conn: Connection, first: date, last: date, limit: int = 10) -> dict[str, Any]:
    """Every trend of the UTC days `first` to `last` (both included)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        days = await store.daily(conn, first, last)
        found = {kind: await store.groups(conn, kind, first, last, MIN_VISITORS, limit) for kind in store.KINDS}

    def one(key: list[str] | None) -> str:
        return key[0] if key else OTHER

    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "days": [{"day": r["day"].isoformat(), "views": r["views"], "visitors": r["visitors"]} for r in days],
        "views": sum(r["views"] for r in days),
        "top_pages": [{"path": one(r["key"]), "views": r["count"], "visitors": r["visitors"]} for r in found["page"]],
        "top_referrers": [
            {"host": one(r["key"]), "views": r["count"], "visitors": r["visitors"]} for r in found["referrer"]
        ],
        "entry_pages": [
            {"path": one(r["key"]), "visits": r["count"], "visitors": r["visitors"]} for r in found["entry"]
        ],
        "exit_pages": [{"path": one(r["key"]), "visits": r["count"], "visitors": r["visitors"]} for r in found["exit"]],
        "transitions": [
            {
                "from": r["key"][0] if r["key"] else OTHER,
                "to": r["key"][1] if r["key"] else OTHER,
                "moves": r["count"],
                "visitors": r["visitors"],
            }
            for r in found["move"]
        ],
    }
