"""The shared loop health: warnings rate-limited per loop with the count held back, and readiness conditions."""

from __future__ import annotations

import time

from spm_common.health import Health
from spm_common.testing.logs import captured_json_logs


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
