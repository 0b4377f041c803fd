"""CPU time from Linux's /proc, the figure that moves least with what else runs on a shared machine."""

from __future__ import annotations

import os
from contextlib import suppress

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POSTGRES, RABBITMQ = "postgres", "beam.smp"  # the command names of Postgres's and RabbitMQ's processes


def cpu_seconds(*pids: int) -> float:
    """User + system CPU time of live processes so far (a process that is gone counts 0)."""
    total = 0
    for pid in pids:
        with suppress(OSError), open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def cpu_by_command(*commands: str) -> dict[str, float]:
    """CPU seconds so far of every process named one of `commands`, by name, what their exited children used
    included (a Postgres backend that ended is counted in its postmaster's cutime and cstime)."""
    found = dict.fromkeys(commands, 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with suppress(OSError), open(f"/proc/{entry.name}/stat") as stat:
            text = stat.read()
            name, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 1 :].split()
            if name in found:
                found[name] += sum(int(f) for f in fields[11:15]) / CLOCK_TICKS  # utime, stime, cutime, cstime
    return found


def machine_cpu() -> float:
    """CPU seconds the whole machine was busy so far (user, nice, system, irq, softirq), from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(f) for f in stat.readline().split()[1:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS  # all but idle and iowait
