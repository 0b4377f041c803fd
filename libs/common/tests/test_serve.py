"""What `serve` does to an app before uvicorn runs it."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from spm_common.serve import YOUNG_GC_THRESHOLD, freeze_after_startup


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def test_what_start_up_built_is_frozen_once_the_app_has_started(collector: None) -> None:
    seen: list[int] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, str]]:
        seen.append(gc.get_freeze_count())  # the app's own start-up runs first
        yield {"started": "yes"}
        seen.append(gc.get_freeze_count())

    app = FastAPI(lifespan=lifespan)
    freeze_after_startup(app)
    async with app.router.lifespan_context(app) as state:
        assert seen == [0]
        assert state == {"started": "yes"}  # the app's lifespan state passes through
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == YOUNG_GC_THRESHOLD
    assert seen[1] > 0
