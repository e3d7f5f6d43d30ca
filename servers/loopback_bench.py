"""A quick loopback look: every server kind under wrk, requests/s and server CPU µs per request.

    python3 -m servers.loopback_bench [--duration S] [--connections N] [--kinds K ...]

Not the testbed's benchmark (bench/ is: namespaces, repeats, plots). The
server is pinned to CPU 0 and wrk (one thread) to CPU 1; server CPU is
user + system time of the server and its worker processes, from /proc.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from servers.kinds import KINDS

SERVER_CPU = 0
CLIENT_CPU = 1
WARM_UP_SECONDS = 1
CLOCK_TICK = 1 / os.sysconf("SC_CLK_TCK")
WRK_TIME_UNITS = {"ms": 0.001, "s": 1, "m": 60}


@dataclass(frozen=True)
class Measurement:
    kind: str
    requests_per_second: float
    cpu_us_per_request: float
    errors: int


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(descendant for child in children for descendant in process_tree(int(child)))]


def cpu_seconds(pid: int) -> float:
    """User + system time of a process (all its threads) and its live descendants."""
    total = 0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total * CLOCK_TICK


def pinned_to(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_accepting(port: int, server: subprocess.Popen, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def run_wrk(port: int, seconds: float, connections: int) -> WrkResult:
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True, preexec_fn=pinned_to(CLIENT_CPU),
    ).stdout
    requests, elapsed, unit = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m),", output).groups()
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    bad_status = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = sum(map(int, socket_errors.groups())) if socket_errors else 0
    errors += int(bad_status.group(1)) if bad_status else 0
    return WrkResult(int(requests), float(elapsed) * WRK_TIME_UNITS[unit], errors)


def measure(kind: str, seconds: float, connections: int) -> Measurement:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "servers", kind, "--host", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, preexec_fn=pinned_to(SERVER_CPU),
    )
    try:
        wait_until_accepting(port, server)
        run_wrk(port, WARM_UP_SECONDS, connections)
        cpu_before = cpu_seconds(server.pid)
        result = run_wrk(port, seconds, connections)
        cpu_used = cpu_seconds(server.pid) - cpu_before
    finally:
        server.terminate()
        server.wait(timeout=10)
    return Measurement(
        kind,
        result.requests / result.seconds,
        cpu_used / result.requests * 1e6 if result.requests else float("nan"),
        result.errors,
    )


def machine() -> str:
    models = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    return (f"{os.cpu_count()} CPUs ({models[0] if models else 'unknown model'}), Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m servers.loopback_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5, help="seconds of measured load per kind (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    args = parser.parse_args()
    print(machine())
    print(f"server on CPU {SERVER_CPU}, wrk -t1 -c{args.connections} on CPU {CLIENT_CPU}, GET /, "
          f"{WARM_UP_SECONDS} s warm-up then {args.duration:g} s measured\n")
    print(f"{'kind':<12} {'requests/s':>12} {'server CPU µs/req':>18} {'wrk errors':>11}")
    for kind in args.kinds:
        result = measure(kind, args.duration, args.connections)
        print(f"{result.kind:<12} {result.requests_per_second:>12,.0f} {result.cpu_us_per_request:>18.1f} "
              f"{result.errors:>11}", flush=True)


if __name__ == "__main__":
    main()
