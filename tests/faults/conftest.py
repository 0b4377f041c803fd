"""Fault suite: the four services as real processes, one fault per scenario, and a table of the counts.

Policy: real servers only. Scenarios run in one session against one set of service processes, each with
its own work labels, and each waits for the system to settle before it counts. The broker fault closes
this world's connections at the broker; SPM_FAULT_BROKER=restart stops and starts the broker itself
(only where nothing else uses it). SPM_FAULTS=0 skips the suite.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from spm_common.testing.smtp import SmtpServer
from spm_common.testing.world import new_world

from .checks import REPORT, MailIndex, report_table
from .harness import System


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SPM_FAULTS", "1") == "0":
        for item in items:
            if "tests/faults/" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason="SPM_FAULTS=0"))


@pytest.fixture(scope="session")
def fault_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-logs")


@pytest.fixture(scope="session")
async def system(smtp: SmtpServer, fault_logs: Path) -> AsyncIterator[System]:
    """A world of its own: the suite counts every dead letter and e-mail, so other tests' must not be there."""
    world = new_world()
    world.smtp_port = smtp.port
    await world.create()
    instance = System(world, smtp, fault_logs)
    try:
        await instance.start()
        yield instance
    finally:
        await instance.stop()
        await world.destroy()


@pytest.fixture(scope="session")
def mail(smtp: SmtpServer) -> MailIndex:
    return MailIndex(smtp)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("fault suite")
        terminalreporter.write_line(report_table())
