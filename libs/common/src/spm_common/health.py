"""How a service's background loops are doing, told to operators: a warning when one fails (at most one a loop
every `WARN_EVERY_SECONDS`, with the count of those held back), gauges at /metrics, and health conditions that
turn /readyz to 503 with a reason.

Every loop that retries on its own (outbox relay, consumers, the notifier's sender, retention and audit jobs)
reports each round to a `LoopHealth`: `ok()` after a round that worked, `failed(reason)` after one that did
not. A loop that keeps failing is therefore visible in the log, in `spm_loop_consecutive_failures` and in
`spm_loop_last_success_timestamp_seconds`, whatever the loop is. The gauges are read at scrape time from these
objects, so reporting a success costs an attribute write and a clock read, nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from spm_common.logging import get_logger

log = get_logger(__name__)

# A loop that fails in a tight retry (the notifier's sender pauses a second or two between refused
# connections) would otherwise fill the log: one warning per loop this often, saying how many were held back.
WARN_EVERY_SECONDS = 30.0

# A condition answers None while it holds, or the reason it does not (shown by /readyz).
Condition = Callable[[], str | None]


class LoopHealth:
    """The state of one background loop. `unready_after` (seconds) makes a loop that has failed every round
    for that long a reason for /readyz to answer 503; None leaves readiness alone."""

    def __init__(
        self,
        service: str,
        loop: str,
        *,
        unready_after: float | None = None,
        warn_every: float = WARN_EVERY_SECONDS,
    ) -> None:
        self.service = service
        self.loop = loop
        self.unready_after = unready_after
        self.warn_every = warn_every
        self.consecutive_failures = 0
        self.failures_total = 0
        # Starting counts as a success: an idle loop (nothing to send yet) is not a failing one.
        self.last_success = time.time()
        self.last_error: str | None = None
        self._failing_since: float | None = None  # monotonic
        self._warned_at: float | None = None
        self._suppressed = 0

    @property
    def failing(self) -> bool:
        return self.consecutive_failures > 0

    def ok(self) -> None:
        """A round worked. Called on hot paths (once per e-mail sent): keep it this cheap."""
        self.last_success = time.time()
        if self.consecutive_failures:
            self._recovered()

    def _recovered(self) -> None:
        log.info(
            "background loop recovered",
            loop=self.loop,
            failures=self.consecutive_failures,
            suppressed=self._suppressed,
        )
        self.consecutive_failures = 0
        self.last_error = None
        self._failing_since = None
        self._warned_at = None
        self._suppressed = 0

    def failed(self, reason: str, **fields: Any) -> None:
        """A round failed with `reason` (already redacted: `describe_error` of the exception, an SMTP reply)."""
        now = time.monotonic()
        self.consecutive_failures += 1
        self.failures_total += 1
        self.last_error = reason
        if self._failing_since is None:
            self._failing_since = now
        if self._warned_at is not None and now - self._warned_at < self.warn_every:
            self._suppressed += 1
            return
        log.warning(
            "background loop failing",
            loop=self.loop,
            error=reason,
            failures=self.consecutive_failures,
            suppressed=self._suppressed,
            **fields,
        )
        self._warned_at = now
        self._suppressed = 0

    def failing_for(self) -> float:
        """Seconds since the first of the current run of failures (0 when it is not failing)."""
        return 0.0 if self._failing_since is None else time.monotonic() - self._failing_since

    def problem(self) -> str | None:
        if self.unready_after is None or self._failing_since is None:
            return None
        failing_for = self.failing_for()
        if failing_for < self.unready_after:
            return None
        return (
            f"{self.loop} has failed every try for {failing_for:.0f} s"
            f" ({self.consecutive_failures} tries): {self.last_error}"
        )


class Health:
    """The loops and health conditions of one service; /readyz answers 503 while any condition fails."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._loops: dict[str, LoopHealth] = {}
        self._conditions: dict[str, Condition] = {}

    def loop(self, name: str, *, unready_after: float | None = None) -> LoopHealth:
        """The tracker of loop `name`, the same one each time it is asked for (a loop restarted by its
        supervisor keeps its count of failures)."""
        tracker = self._loops.get(name)
        if tracker is None:
            tracker = self._loops[name] = LoopHealth(self.service, name, unready_after=unready_after)
            _LOOPS[(self.service, name)] = tracker
        elif unready_after is not None:
            tracker.unready_after = unready_after
        if tracker.unready_after is not None:
            self._conditions[name] = tracker.problem
        return tracker

    def add_condition(self, name: str, condition: Condition) -> None:
        """Any other condition readiness depends on, by name (shown in /readyz)."""
        self._conditions[name] = condition

    def problems(self) -> dict[str, str]:
        """The reason of every condition that does not hold, by name."""
        problems: dict[str, str] = {}
        for name, condition in self._conditions.items():
            reason = condition()
            if reason is not None:
                problems[name] = reason
        return problems


# The trackers the metrics show, by (service, loop): the newest wins, so a service rebuilt in the same
# process (tests) is shown once.
_LOOPS: dict[tuple[str, str], LoopHealth] = {}


class _LoopCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        failures = GaugeMetricFamily(
            "spm_loop_consecutive_failures",
            "Rounds of a background loop that failed in a row (0: its last round worked)",
            labels=["service", "loop"],
        )
        last_success = GaugeMetricFamily(
            "spm_loop_last_success_timestamp_seconds",
            "When a round of a background loop last worked (Unix time; the process start counts as one)",
            labels=["service", "loop"],
        )
        total = CounterMetricFamily(
            "spm_loop_failures", "Rounds of a background loop that failed", labels=["service", "loop"]
        )
        for (service, name), tracker in list(_LOOPS.items()):
            failures.add_metric([service, name], tracker.consecutive_failures)
            last_success.add_metric([service, name], tracker.last_success)
            total.add_metric([service, name], tracker.failures_total)
        yield failures
        yield last_success
        yield total

    def describe(self) -> Iterator[Metric]:
        return iter(())


REGISTRY.register(_LoopCollector())
