"""The shared loop health: warnings rate-limited per loop with the count held back, and readiness conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY
from spm_common import runtime as runtime_module
from spm_common.health import Health
from spm_common.runtime import Runtime
from spm_common.testing.logs import captured_json_logs

from .conftest import PROBE_MIGRATIONS, ProbeSettings


def test_failures_warn_once_per_period_counting_the_rest_and_a_long_run_of_them_is_a_readiness_problem() -> None:
    health = Health("probe-health")
    loop = health.loop("mailer", unready_after=0.3)
    loop.warn_every = 0.2
    with captured_json_logs("probe-health") as logs:
        for _ in range(3):
            loop.failed("ConnectionRefusedError: [Errno 111] Connect call failed to someone@example.com")
        assert health.problems() == {}  # failing, but not for long enough
        time.sleep(0.35)
        loop.failed("ConnectionRefusedError: still refused")
        problem = health.problems()["mailer"]
        loop.ok()
        assert health.problems() == {}
    warnings = [line for line in logs.lines if line["event"] == "background loop failing"]
    assert [(w["loop"], w["failures"], w["suppressed"]) for w in warnings] == [("mailer", 1, 0), ("mailer", 4, 2)]
    assert all(w["level"] == "warning" for w in warnings)
    assert "someone@example.com" not in logs.text
    assert problem.startswith("mailer has failed every try for 0 s (4 tries): ConnectionRefusedError")
    assert [
        (line["failures"], line["level"]) for line in logs.lines if line["event"] == "background loop recovered"
    ] == [(4, "info")]
    assert health.loop("mailer") is loop  # a restarted loop keeps its count


def test_a_loop_without_a_window_never_makes_the_service_unready() -> None:
    health = Health("probe-health-2")
    loop = health.loop("retention")
    loop.failed("OSError: gone")
    loop._failing_since = time.monotonic() - 3600  # failing for an hour
    assert health.problems() == {}
    health.add_condition("disk", lambda: "disk full")
    assert health.problems() == {"disk": "disk full"}


async def test_a_background_task_that_keeps_failing_is_loud_and_recovers(
    probe_settings: Callable[..., ProbeSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task the runtime restarts (a retention job, a fan-out worker) once said so only in an error line;
    now it is a loop like the others: the warning and the gauge an alert can use, back to 0 once it runs."""
    monkeypatch.setattr(runtime_module, "TASK_RESTART_FIRST_DELAY_SECONDS", 0.05)
    monkeypatch.setattr(runtime_module, "TASK_RECOVERED_AFTER_SECONDS", 0.5)
    runs = 0
    settled = asyncio.Event()

    async def flaky_job(_: Runtime) -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise OSError("disk gone for someone@example.com")
        settled.set()
        await asyncio.Event().wait()  # then runs for good

    labels = {"service": "orders", "loop": "task:flaky_job"}  # the probe is an "orders" service
    with captured_json_logs("probe") as logs:
        runtime = Runtime(probe_settings(), migrations=PROBE_MIGRATIONS, background=[flaky_job])
        await runtime.start()
        try:
            await asyncio.wait_for(settled.wait(), 10)
            assert REGISTRY.get_sample_value("spm_loop_consecutive_failures", labels) == 3
            assert REGISTRY.get_sample_value("spm_loop_failures_total", labels) == 3
            await asyncio.sleep(0.8)
            assert REGISTRY.get_sample_value("spm_loop_consecutive_failures", labels) == 0
        finally:
            await runtime.stop()
    warnings = [line for line in logs.lines if line["event"] == "background loop failing"]
    assert [(w["loop"], w["failures"]) for w in warnings] == [("task:flaky_job", 1)]  # the rest held back
    assert [line["failures"] for line in logs.lines if line["event"] == "background loop recovered"] == [3]
    assert "someone@example.com" not in logs.text
