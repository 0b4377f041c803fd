"""The count of wrong operator tokens per client: its window, and a bound on how many clients it remembers
(addresses are cheap for an attacker, memory is not)."""

from __future__ import annotations

from spm_common.http import OperatorGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_locked_out_for_the_rest_of_the_window_from_the_first_failure() -> None:
    clock = Clock()
    guard = OperatorGuard(max_failures=3, window_seconds=60, clock=clock)
    for _ in range(3):
        assert guard.retry_after("198.51.100.1") is None
        guard.failed("198.51.100.1")
        clock.now += 10
    assert guard.retry_after("198.51.100.1") == 30
    assert guard.retry_after("198.51.100.2") is None
    clock.now += 30
    assert guard.retry_after("198.51.100.1") is None


def test_it_remembers_a_bounded_number_of_clients() -> None:
    clock = Clock()
    guard = OperatorGuard(max_failures=1, window_seconds=60, clock=clock)
    guard.MAX_CLIENTS = 100
    for i in range(250):
        guard.failed(f"2001:db8::{i:x}")
    assert len(guard._clients) == 100
    # The newest are the ones still refused; the oldest were forgotten first.
    assert guard.retry_after("2001:db8::f9") is not None
    assert guard.retry_after("2001:db8::0") is None
