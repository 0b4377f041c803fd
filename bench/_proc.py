"""The benchmarks' services as processes, and CPU time from Linux's /proc, the figure that moves least with
what else runs on a shared machine."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

import httpx

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


class ServiceProcesses:
    """Services as processes (`python -m <name>`, as `make run` starts them), each with its own environment,
    started together and each waited for until its `/readyz` answers 200."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    async def start_all(self, envs: Mapping[str, Mapping[str, str]], ports: Mapping[str, int]) -> None:
        for name, env in envs.items():
            self.processes[name] = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
                [sys.executable, "-m", name],
                env=dict(env),
                cwd=Path(__file__).parent.parent,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        async with httpx.AsyncClient() as client:
            for name, port in ports.items():
                for _ in range(1200):
                    if self.processes[name].poll() is not None:
                        raise RuntimeError(f"{name} exited with {self.processes[name].returncode}")
                    with suppress(httpx.TransportError):
                        if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError(f"{name} not ready in 120 s")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
