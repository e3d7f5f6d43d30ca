"""The headline metrics, defined once: their record field, labels, plot and table placement."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str  # the Record field
    label: str  # axis label and summary name, in the record's unit
    short: str  # column of `bench compare`: "<short> B/A"
    figure: str  # the plot it is drawn in: <workload>-<figure>.png
    log_y: bool = False
    table: str | None = None  # heading of its report.md table; None: plotted only
    divisor: float = 1  # record unit -> table unit
    decimals: int = 0  # in the table


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("requests_per_s", "requests/s", "req/s", "requests", table="requests/s"),
    Metric("latency_p50_us", "p50 latency (µs)", "p50", "latency", log_y=True),
    Metric("latency_p99_us", "p99 latency (µs)", "p99", "latency", log_y=True, table="p99 latency (ms)",
           divisor=1000, decimals=2),
    Metric("cpu_us_per_request", "server CPU µs/request", "CPU/req", "cpu", table="server CPU µs per request",
           decimals=1),
    # What else the machine did while wrk ran: does the runner itself disturb the measurement?
    Metric("engine_cpu_share", "container engine CPU (CPUs' worth)", "engine", "load",
           table="container engine CPU while wrk ran (CPUs' worth: dockerd, containerd, shims, runc)", decimals=3),
    Metric("other_cpu_share", "other processes' CPU (CPUs' worth)", "other", "load"),
)}
TABLED = [m for m in METRICS.values() if m.table]
# figure name -> the metrics drawn in it, one panel each
FIGURES: dict[str, list[Metric]] = {}
for _metric in METRICS.values():
    FIGURES.setdefault(_metric.figure, []).append(_metric)
