"""Load test of POST /v1/messages: one real contact service process against a bare FastAPI endpoint.

Both run as subprocesses on free ports, the same way (uvicorn, one process), on this machine's Postgres
and RabbitMQ, in a database and exchange of their own that are dropped afterwards. The load comes from
`wrk` (Debian package) where installed, else from a Python asyncio client. Every request carries a
different valid message from one client address, so the service's rate limits are raised for the run
(their counting still happens on every request). Prints requests/s, p50/p99 latency, and how many messages
were really stored per second (counted in Postgres), and the CPU of each process per stored message: the
contact service with its outbox relay in its own process (the default), and, in a second run, with the relay
in a process of its own (SPM_CONTACT_OUTBOX_RELAY=separate, `python -m contact.relay`).

    uv run python -m bench.contact_intake [--quick] [--seconds 10] [--connections 32] [--relay both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from spm_common.testing.smtp import free_port
from spm_common.testing.world import World, new_world

from bench._proc import POSTGRES, RABBITMQ, cpu_by_command, cpu_seconds, machine_cpu

PATH = "/v1/messages"
LoadTool = Callable[[str, float | None], dict[str, float]]  # (url, seconds or None for the run's) -> figures
WRK_SCRIPT = """
local counter = 0
local thread_id = 0
function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept-Language"] = "vi-VN,vi;q=0.9,en;q=0.8"
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"name":"Nguyễn Văn Thử","email":"visitor-%d-%d@example.com","subject":"Hỏi về giấy phép %d",' ..
    '"message":"Xin chào, tôi cần giúp đỡ với mã kích hoạt của tôi. Cảm ơn."}',
    tid, counter, counter)
  return wrk.format(nil, nil, nil, body)
end
function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

BARE_APP = """
import uuid

from fastapi import FastAPI, status

app = FastAPI()

@app.post("/v1/messages", status_code=status.HTTP_202_ACCEPTED)
async def accept() -> dict[str, str]:
    return {"id": str(uuid.uuid4())}
"""


def body(n: int) -> dict[str, str]:
    return {
        "name": "Nguyễn Văn Thử",
        "email": f"visitor-py-{n}@example.com",
        "subject": f"Hỏi về giấy phép {n}",
        "message": "Xin chào, tôi cần giúp đỡ với mã kích hoạt của tôi. Cảm ơn.",
    }


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        child = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield child
        finally:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_ready(url: str, child: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"{url} exited with {child.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in {timeout}s")


def run_wrk(url: str, seconds: float, connections: int, threads: int, script: Path) -> dict[str, float]:
    duration = f"-d{max(1, round(seconds))}s"
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", duration, "--timeout", "5s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    duration = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "seconds": duration,
        "rps": raw["requests"] / duration,
        "failed": raw["non_2xx"] + raw["socket_errors"],
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
    }


async def run_python(url: str, seconds: float, connections: int) -> dict[str, float]:
    latencies: list[float] = []
    failed = 0
    counter = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=5) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal failed, counter
            while time.perf_counter() < deadline:
                counter += 1
                started = time.perf_counter()
                response = await client.post(url, json=body(counter))
                latencies.append(time.perf_counter() - started)
                if response.status_code != 202:
                    failed += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "failed": failed,
        "p50_ms": quantiles[49] * 1000,
        "p90_ms": quantiles[89] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "max_ms": max(latencies) * 1000,
    }


def load(url: str, seconds: float, connections: int, threads: int, script: Path, tool: str) -> dict[str, float]:
    if tool == "wrk":
        return run_wrk(url, seconds, connections, threads, script)
    return asyncio.run(run_python(url, seconds, connections))


async def stored_messages(world: World) -> tuple[int, int]:
    conn = await world.admin()
    try:
        messages = await conn.fetchval("SELECT count(*) FROM contact.messages")
        backlog = await conn.fetchval("SELECT count(*) FROM contact.outbox WHERE published_at IS NULL")
    finally:
        await conn.close()
    return int(messages), int(backlog)


def drain(world: World, timeout: float = 120) -> float:
    """Seconds until the outbox is empty (the relay has published everything)."""
    started = time.monotonic()
    while asyncio.run(stored_messages(world))[1] and time.monotonic() - started < timeout:
        time.sleep(0.2)
    return time.monotonic() - started


@dataclass
class ContactRun:
    load: dict[str, float]
    stored: int
    backlog: int  # outbox rows not yet published when the load stopped
    drained_in: float
    service_cpu: float  # seconds, during the load
    service_cpu_drained: float  # seconds, from the load's start until the outbox was empty
    relay_cpu: float | None = None  # the same for the relay's own process, where it has one
    relay_cpu_drained: float | None = None
    shared_cpu: dict[str, float] | None = None  # seconds during the load: Postgres, RabbitMQ, the whole machine


def shared_cpu() -> dict[str, float]:
    """CPU seconds so far of what every request shares the machine with, and of the whole machine."""
    return {**cpu_by_command(POSTGRES, RABBITMQ), "machine": machine_cpu()}


def since(before: dict[str, float]) -> dict[str, float]:
    now = shared_cpu()
    return {name: now[name] - used for name, used in before.items()}


TITLES = {"in-process": "contact POST /v1/messages", "separate": "contact, relay separate"}


def run_contact(
    world: World, env: dict[str, str], relay: str, workdir: Path, load_with: LoadTool, port: int
) -> ContactRun:
    """The contact service under load, its outbox relay in its process or in one of its own."""
    env = {**env, "SPM_CONTACT_OUTBOX_RELAY": relay}
    with contextlib.ExitStack() as stack:
        contact = stack.enter_context(process([sys.executable, "-m", "contact"], env, workdir / "contact.log"))
        wait_ready(f"http://127.0.0.1:{port}/readyz", contact, workdir / "contact.log")
        watched = [contact.pid]
        if relay == "separate":
            relay_port = free_port()
            relay_env = {**env, "SPM_CONTACT_RELAY_PORT": str(relay_port)}
            relay_log = workdir / "contact-relay.log"
            relay_process = stack.enter_context(process([sys.executable, "-m", "contact.relay"], relay_env, relay_log))
            wait_ready(f"http://127.0.0.1:{relay_port}/readyz", relay_process, relay_log)
            watched.append(relay_process.pid)
        url = f"http://127.0.0.1:{port}{PATH}"
        load_with(url, 1)  # warm-up
        drain(world)
        before, _ = asyncio.run(stored_messages(world))
        cpu_before = [cpu_seconds(pid) for pid in watched]
        shared_before = shared_cpu()
        result = load_with(url, None)
        cpu_loaded = [cpu_seconds(pid) - start for pid, start in zip(watched, cpu_before, strict=True)]
        shared = since(shared_before)
        after, backlog = asyncio.run(stored_messages(world))
        drained_in = drain(world)
        cpu_drained = [cpu_seconds(pid) - start for pid, start in zip(watched, cpu_before, strict=True)]
    return ContactRun(
        result,
        after - before,
        backlog,
        drained_in,
        cpu_loaded[0],
        cpu_drained[0],
        cpu_loaded[1] if relay == "separate" else None,
        cpu_drained[1] if relay == "separate" else None,
        shared,
    )


def line(name: str, r: dict[str, float], stored_per_second: float | None = None) -> str:
    stored = f"{stored_per_second:>10,.0f}" if stored_per_second is not None else f"{'-':>10}"
    return (
        f"{name:<26}{r['rps']:>10,.0f}{stored}{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}"
        f"{r['max_ms']:>9.1f}{int(r['failed']):>8}{int(r['requests']):>10}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--tool", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python")
    parser.add_argument(
        "--relay",
        choices=["in-process", "separate", "both"],
        default="both",
        help="where contact's outbox relay runs (SPM_CONTACT_OUTBOX_RELAY); both: one run each",
    )
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    connections = min(args.connections, 8) if args.quick else args.connections

    relays = ["in-process", "separate"] if args.relay == "both" else [args.relay]

    def load_with(url: str, duration: float | None) -> dict[str, float]:
        return load(url, duration or seconds, connections, args.threads, script, args.tool)

    load_before = os.getloadavg()[0]
    world = new_world()
    asyncio.run(world.create())
    workdir = Path(tempfile.mkdtemp(prefix="bench-contact-"))
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    (workdir / "bare_app.py").write_text(BARE_APP)
    contact_port, bare_port = free_port(), free_port()
    env = {
        **os.environ,
        **world.env(),
        "SPM_HTTP_HOST": "127.0.0.1",
        "SPM_CONTACT_PORT": str(contact_port),
        "SPM_CONTACT_RATE_PER_CLIENT": "1000000000",
        "SPM_CONTACT_RATE_GLOBAL": "1000000000",
        "SPM_LOG_FORMAT": "json",
        "SPM_OUTBOX_POLL_SECONDS": "2",
    }
    bare_env = {**os.environ, "PYTHONPATH": str(workdir)}
    results = {}
    try:
        bare_cmd = [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(bare_port), "--no-access-log"]
        with process(bare_cmd, bare_env, workdir / "bare.log") as bare:
            wait_ready(f"http://127.0.0.1:{bare_port}/docs", bare, workdir / "bare.log")
            bare_url = f"http://127.0.0.1:{bare_port}{PATH}"
            load(bare_url, 1, connections, args.threads, script, args.tool)  # warm-up
            bare_cpu_before = cpu_seconds(bare.pid)
            bare_shared_before = shared_cpu()
            results["bare"] = load(bare_url, seconds, connections, args.threads, script, args.tool)
            bare_cpu = cpu_seconds(bare.pid) - bare_cpu_before
            bare_machine = since(bare_shared_before)["machine"]
        runs = {}
        for relay in relays:
            runs[relay] = run_contact(world, env, relay, workdir, load_with, contact_port)
        print(
            f"contact intake benchmark ({args.tool}, {connections} connections, {seconds:.0f} s each, "
            f"{os.cpu_count()} CPUs, load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after)"
        )
        heads = ("req/s", "stored/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "failed", "requests")
        widths = (10, 10, 9, 9, 9, 9, 8, 10)
        print(" " * 26 + "".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True)))
        print(line("bare FastAPI 202", results["bare"]))
        for relay, run in runs.items():
            print(line(TITLES[relay], run.load, run.stored / run.load["seconds"]))
        bare_per_request = bare_cpu / max(results["bare"]["requests"], 1)
        bare_machine_per_request = bare_machine / max(results["bare"]["requests"], 1)
        for relay, run in runs.items():
            print(f"{TITLES[relay]}:")
            print(f"  contact/bare rate: {run.load['rps'] / results['bare']['rps']:.2f}")
            per_message = run.service_cpu / max(run.stored, 1)
            print(
                f"  contact process CPU during the load: {run.service_cpu / run.load['seconds']:.0%} of one core, "
                f"{per_message * 1e6:,.0f} us per stored message"
                f" ({run.service_cpu_drained / max(run.stored, 1) * 1e6:,.0f} us until all published);"
                f" contact/bare CPU per request: {per_message / max(bare_per_request, 1e-9):.2f}"
            )
            if run.relay_cpu is not None and run.relay_cpu_drained is not None:
                print(
                    f"  relay process CPU during the load: {run.relay_cpu / run.load['seconds']:.0%} of one core, "
                    f"{run.relay_cpu / max(run.stored, 1) * 1e6:,.0f} us per stored message"
                    f" ({run.relay_cpu_drained / max(run.stored, 1) * 1e6:,.0f} us until all published)"
                )
            if run.shared_cpu is not None:
                stored = max(run.stored, 1)
                print(
                    "  during the load, us per stored message:"
                    f" Postgres {run.shared_cpu[POSTGRES] / stored * 1e6:,.0f},"
                    f" RabbitMQ {run.shared_cpu[RABBITMQ] / stored * 1e6:,.0f},"
                    f" whole machine {run.shared_cpu['machine'] / stored * 1e6:,.0f}"
                    f" ({run.shared_cpu['machine'] / run.load['seconds']:.1f} of {os.cpu_count()} CPUs busy);"
                    f" machine per stored message / per bare request:"
                    f" {run.shared_cpu['machine'] / stored / max(bare_machine_per_request, 1e-9):.2f}"
                )
            print(
                f"  outbox rows (2 per message) not yet published when the load stopped: {run.backlog:,};"
                f" all published {run.drained_in:.1f} s later"
            )
        print(
            f"bare process CPU during its load: {bare_cpu / results['bare']['seconds']:.0%} of one core, "
            f"{bare_per_request * 1e6:,.0f} us per request; whole machine {bare_machine_per_request * 1e6:,.0f} us per"
            f" request ({bare_machine / results['bare']['seconds']:.1f} of {os.cpu_count()} CPUs busy, wrk included)"
        )
    finally:
        asyncio.run(world.destroy())
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
