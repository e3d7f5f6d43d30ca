"""wrk's command line, its one-line JSON report (see wrk/report.lua), and the exact merge of several reports."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.config import Workload, host_port

SCRIPT = Path(__file__).with_name("wrk") / "report.lua"
HISTOGRAM_ENV = "SWISSKNIFE_WRK_HISTOGRAM"  # =1: report.lua adds the latency histogram to its line
PERCENTILES = {"p50": 50.0, "p75": 75.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9}

Histogram = tuple[tuple[int, int], ...]  # (latency µs, how many responses took it), lowest first


@dataclass(frozen=True)
class WrkReport:
    requests: int
    duration_us: int
    bytes: int
    errors: dict[str, int]  # connect, read, write, status, timeout
    latency_us: dict[str, float | None]  # mean, stdev, max and PERCENTILES; None when wrk has none
    histogram: Histogram | None = None  # only when asked for (HISTOGRAM_ENV)

    def __post_init__(self) -> None:
        if self.histogram is not None:  # JSON gives lists
            object.__setattr__(self, "histogram", tuple((int(v), int(c)) for v, c in self.histogram))


def url(host: str, port: int, path: str) -> str:
    return f"http://{host_port(host, port)}{path}"


def command(target: str, workload: Workload, connections: int, duration_s: int,
            threads: int, timeout_s: int, histogram: bool = False) -> list[str]:
    """wrk's argv; every run is bounded by its duration and per-request timeout.
    `histogram`: the report carries wrk's latency histogram, for `merge`."""
    return [
        *(["env", f"{HISTOGRAM_ENV}=1"] if histogram else []),
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


def percentile(histogram: Histogram, p: float) -> int | None:
    """wrk's own rule (stats_percentile): the smallest latency whose cumulative count reaches
    round(p/100 * count + 0.5); None for an empty histogram."""
    total = sum(count for _, count in histogram)
    rank = math.floor(p / 100 * total + 0.5 + 0.5)  # C's round() of a positive number: half away from zero
    seen = 0
    for value, count in histogram:
        seen += count
        if seen >= rank:
            return value
    return None


def latency_figures(histogram: Histogram) -> dict[str, float | None]:
    """Mean, sample standard deviation (as wrk: n - 1), max and PERCENTILES of a histogram."""
    total = sum(count for _, count in histogram)
    if total == 0:
        return {"mean": None, "stdev": None, "max": None, **dict.fromkeys(PERCENTILES)}
    mean = sum(value * count for value, count in histogram) / total
    squares = sum((value - mean) ** 2 * count for value, count in histogram)
    return {
        "mean": mean, "stdev": math.sqrt(squares / (total - 1)) if total > 1 else 0.0,
        "max": float(histogram[-1][0]),
        **{name: float(percentile(histogram, p)) for name, p in PERCENTILES.items()},
    }


def merge_histograms(histograms: Sequence[Histogram]) -> Histogram:
    counts: Counter[int] = Counter()
    for histogram in histograms:
        for value, count in histogram:
            counts[value] += count
    return tuple(sorted(counts.items()))


def merge(reports: Sequence[WrkReport]) -> WrkReport:
    """Runs made at the same time against one server, as one: requests, bytes and errors summed,
    latencies recomputed from the summed histograms (never averaged percentiles); the duration is
    the longest run's. One report comes back as it is."""
    if len(reports) == 1:
        return reports[0]
    if any(report.histogram is None for report in reports):
        raise ValueError("merging wrk reports needs their latency histograms (wrk.command(histogram=True))")
    histogram = merge_histograms([report.histogram for report in reports])
    return WrkReport(
        requests=sum(report.requests for report in reports),
        duration_us=max(report.duration_us for report in reports),
        bytes=sum(report.bytes for report in reports),
        errors={kind: sum(report.errors[kind] for report in reports) for kind in reports[0].errors},
        latency_us=latency_figures(histogram),
        histogram=histogram,
    )
