"""wrk's command line and its one-line JSON report (see wrk/report.lua)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.config import Workload

SCRIPT = Path(__file__).with_name("wrk") / "report.lua"
PERCENTILES = ("p50", "p75", "p90", "p99", "p99_9")


@dataclass(frozen=True)
class WrkReport:
    requests: int
    duration_us: int
    bytes: int
    errors: dict[str, int]  # connect, read, write, status, timeout
    latency_us: dict[str, float | None]  # mean, stdev, max and PERCENTILES; None when wrk has none


def url(host: str, port: int, path: str) -> str:
    return f"http://[{host}]:{port}{path}"


def command(target: str, workload: Workload, connections: int, duration_s: int,
            threads: int, timeout_s: int) -> list[str]:
    """wrk's argv; every run is bounded by its duration and per-request timeout."""
    return [
        "wrk", f"--threads={min(threads, connections)}", f"--connections={connections}",
        f"--duration={duration_s}s", f"--timeout={timeout_s}s", f"--script={SCRIPT}", target,
        "--", str(workload.pipeline), "close" if workload.close else "keep-alive",
    ]


def parse(stdout: str) -> WrkReport:
    """The JSON line report.lua's done() printed after wrk's own summary."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return WrkReport(**json.loads(line))
    raise ValueError(f"no JSON report in wrk's output: {stdout[-300:]!r}")
