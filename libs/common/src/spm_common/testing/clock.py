"""Tests that count attempts against a rate limit.

`spm_common.ratelimit` aligns its fixed windows on the clock, so a test whose attempts straddle a window's end
sees the count start again midway and fails by chance (about once in a hundred runs for a 600 s window and a
few seconds of test). The test waits, rarely and briefly, until every window it counts in has room left.
"""

from __future__ import annotations

import asyncio
import time


async def clear_of_window_edges(*window_seconds: int, margin: float = 20.0) -> None:
    """Return once each window (of these lengths) has at least `margin` seconds left, waiting if needed."""
    now = time.time()
    wait = max((max(0.0, margin - (w - now % w)) for w in window_seconds if w > margin), default=0.0)
    if wait:
        await asyncio.sleep(wait + 0.1)
