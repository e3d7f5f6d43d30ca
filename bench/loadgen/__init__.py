"""openloop, the constant-rate generator (openloop.c): its build, command line, JSON report, histograms and merge.

wrk2, oha, vegeta and k6 are in no registry here, h2load and autocannon do not time requests from their
intended start, and a Python client cannot offer 200,000 requests/s on one core: the testbed compiles its own
small C generator. The image builds it into /usr/local/bin (docker/Dockerfile); on the host `binary()` compiles
it with gcc into a cache directory at first use.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

SOURCE = Path(__file__).with_name("openloop.c")
NAME = "openloop"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swissknife"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror")
PERCENTILES = {"p50": 50.0, "p75": 75.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9, "p99_99": 99.99}
SUB_BUCKETS = 128  # openloop.c's SUB_BITS: a bucket is at most 1/128 of its value wide

Histogram = tuple[tuple[int, int], ...]  # (bucket's lowest value in ns, count), lowest first
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")


def binary() -> str:
    """The host's openloop: compiled from SOURCE with gcc into CACHE (keyed by the source's hash) at first use."""
    source = SOURCE.read_bytes()
    target = CACHE / f"{NAME}-{hashlib.sha256(source).hexdigest()[:12]}"
    if target.exists():
        return str(target)
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchError("the open-loop generator is C compiled at first use and gcc is not installed: "
                         "apt-get install gcc (or run with --runner docker, whose image has it built)")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}")
    done = subprocess.run([gcc, *CFLAGS, "-o", str(partial), str(SOURCE)], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"gcc could not build {SOURCE}: {done.stderr.strip()[-500:]}")
    partial.replace(target)  # atomic: a concurrent build of the same source gives the same file
    return str(target)


@dataclass(frozen=True)
class Route:
    path: str
    weight: float  # percent of the requests


def command(program: str, host: str, port: int, rate: float, connections: int, duration_s: float,
            timeout_s: float, routes: Sequence[Route], vary: str | None = None, seed: int = 1,
            interval_ms: int = 250) -> list[str]:
    """openloop's argv; bounded by duration + timeout + 1 s (its own drain limit)."""
    return [program, "--host", host, "--port", str(port), "--rate", f"{rate:.3f}", "--connections", str(connections),
            "--duration", f"{duration_s:g}", "--timeout", f"{timeout_s:g}", "--seed", str(seed),
            "--interval-ms", str(interval_ms), "--vary", vary or "none",
            *(arg for route in routes for arg in ("--route", f"{route.weight:g}:{route.path}"))]


@dataclass(frozen=True)
class RouteReport:
    path: str
    weight: float
    requests: int  # answered or left unanswered
    histogram_ns: Histogram

    def __post_init__(self) -> None:
        object.__setattr__(self, "histogram_ns", as_histogram(self.histogram_ns))


@dataclass(frozen=True)
class Report:
    """One openloop run (or several merged): counts, the corrected and uncorrected histograms, per-route ones."""

    rate: float  # the target, requests/s
    connections: int
    duration_us: int  # the schedule's length
    scheduled: int
    sent: int
    unsent: int  # scheduled but never sent: the generator fell too far behind
    requests: int  # answered
    unanswered: int  # still waiting when the drain ended: recorded at their latency so far, and timeouts
    bytes: int
    reconnects: int
    resent: int
    late_max_us: int  # the most the generator was behind its schedule
    issued_us: int  # from the schedule's start to the last request sent
    drain_us: int
    errors: dict[str, int]
    histogram_ns: Histogram
    uncorrected_ns: Histogram
    routes: tuple[RouteReport, ...]
    interval_ms: int
    series: tuple[tuple[int, int, int, int], ...]  # per interval by intended time: sent, answered, Σ µs, max µs
    tool: str = NAME
    capped: bool = False  # the server left so many unanswered that the rest of the schedule was not sent

    def __post_init__(self) -> None:
        object.__setattr__(self, "histogram_ns", as_histogram(self.histogram_ns))
        object.__setattr__(self, "uncorrected_ns", as_histogram(self.uncorrected_ns))
        object.__setattr__(self, "routes", tuple(r if isinstance(r, RouteReport) else RouteReport(**r)
                                                 for r in self.routes))
        object.__setattr__(self, "series", tuple(tuple(int(x) for x in s) for s in self.series))

    @property
    def achieved_rate(self) -> float:
        """Requests sent per second of sending: the rate the generator kept (the schedule's, when on time)."""
        return self.sent / (max(self.duration_us, self.issued_us) / 1e6)


def as_histogram(pairs: Sequence[Sequence[int]]) -> Histogram:
    return tuple((int(v), int(c)) for v, c in pairs)


def parse(stdout: str) -> Report:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return Report(**json.loads(line))
    raise ValueError(f"no JSON report in openloop's output: {stdout[-300:]!r}")


def width(lowest_ns: int) -> int:
    """The bucket's width: 1 ns below 256 ns, then 1/128 of its power of two."""
    return 1 if lowest_ns < 2 * SUB_BUCKETS else 1 << (lowest_ns.bit_length() - 8)


def percentile_ns(histogram: Histogram, p: float) -> int | None:
    """HdrHistogram's rule: the highest value equivalent to the bucket holding the ⌈p % of the count⌉-th value."""
    total = sum(count for _, count in histogram)
    if total == 0:
        return None
    rank = max(1, math.ceil(p / 100 * total - 1e-9))
    seen = 0
    for value, count in histogram:
        seen += count
        if seen >= rank:
            return value + width(value) - 1
    return None


def figures_us(histogram: Histogram) -> dict[str, float | None]:
    """Mean (bucket midpoints), max and PERCENTILES in µs; None throughout for an empty histogram."""
    total = sum(count for _, count in histogram)
    if total == 0:
        return {"mean": None, "max": None, **dict.fromkeys(PERCENTILES)}
    mean = sum((value + (width(value) - 1) / 2) * count for value, count in histogram) / total
    last = histogram[-1][0]
    return {"mean": mean / 1e3, "max": (last + width(last) - 1) / 1e3,
            **{name: percentile_ns(histogram, p) / 1e3 for name, p in PERCENTILES.items()}}


def merge_histograms(histograms: Sequence[Histogram]) -> Histogram:
    counts: Counter[int] = Counter()
    for histogram in histograms:
        for value, count in histogram:
            counts[value] += count
    return tuple(sorted(counts.items()))


def merge(reports: Sequence[Report]) -> Report:
    """Runs made at the same time against one server (the rate split between them), as one: counts and rates
    summed, histograms summed bucket by bucket (exact: every run shares the buckets), series summed by interval."""
    if len(reports) == 1:
        return reports[0]
    first = reports[0]
    length = max(len(r.series) for r in reports)
    series = tuple(tuple(sum(r.series[i][j] for r in reports if i < len(r.series)) if j < 3 else
                         max((r.series[i][3] for r in reports if i < len(r.series)), default=0) for j in range(4))
                   for i in range(length))
    return Report(
        rate=sum(r.rate for r in reports), connections=sum(r.connections for r in reports),
        duration_us=max(r.duration_us for r in reports),
        **{name: sum(getattr(r, name) for r in reports)
           for name in ("scheduled", "sent", "unsent", "requests", "unanswered", "bytes", "reconnects", "resent")},
        capped=any(r.capped for r in reports), late_max_us=max(r.late_max_us for r in reports),
        issued_us=max(r.issued_us for r in reports),
        drain_us=max(r.drain_us for r in reports),
        errors={kind: sum(r.errors[kind] for r in reports) for kind in ERROR_KINDS},
        histogram_ns=merge_histograms([r.histogram_ns for r in reports]),
        uncorrected_ns=merge_histograms([r.uncorrected_ns for r in reports]),
        routes=tuple(RouteReport(route.path, route.weight, sum(r.routes[i].requests for r in reports),
                                 merge_histograms([r.routes[i].histogram_ns for r in reports]))
                     for i, route in enumerate(first.routes)),
        interval_ms=first.interval_ms, series=series,
    )
