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
    experiment: str | None = None  # measured for this experiment's workloads only: tabled and drawn against its axis
    compared: bool = True  # a ratio column in `bench compare` (not for shares of idle CPUs: ratios of noise)


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("requests_per_s", "requests/s", "req/s", "requests", table="requests/s"),
    Metric("latency_p50_us", "p50 latency (µs)", "p50", "latency", log_y=True),
    Metric("latency_p99_us", "p99 latency (µs)", "p99", "latency", log_y=True, table="p99 latency (ms)",
           divisor=1000, decimals=2),
    Metric("cpu_us_per_request", "server CPU µs/request", "CPU/req", "cpu", table="server CPU µs per request",
           decimals=1),
    # What else the machine did while wrk ran: does the runner itself disturb the measurement?
    Metric("engine_cpu_share", "container engine CPU (CPUs' worth)", "engine", "load",
           table="container engine CPU while wrk ran (CPUs' worth: dockerd, containerd, shims, runc)", decimals=3,
           compared=False),
    Metric("other_cpu_share", "other processes' CPU (CPUs' worth)", "other", "load", compared=False),
    # What an idle connection costs: resident set growth while they were opened, over their number.
    Metric("idle_server_kib_per_connection", "server KiB per idle connection", "srv KiB/idle", "memory",
           table="server KiB per idle connection (resident set, all processes)", decimals=2,
           experiment="idle-connections"),
    Metric("idle_holder_kib_per_connection", "holder KiB per idle connection", "hold KiB/idle", "memory",
           table="holder KiB per idle connection (client side)", decimals=2, experiment="idle-connections"),
    Metric("idle_kernel_kib_per_connection", "kernel KiB per idle connection (both ends)", "kern KiB/idle",
           "memory", table="kernel KiB per idle connection (slab + TCP buffers, both ends, machine-wide)",
           decimals=2, experiment="idle-connections"),
    Metric("idle_open_s", "seconds to open the idle connections", "open s", "opening",
           table="seconds to open the idle connections (until the server accepted them all)", decimals=1,
           experiment="idle-connections"),
)}


def tabled(experiment: str | None = None) -> list[Metric]:
    """The metrics with a table in a workload's section (None) or in `experiment`'s section."""
    return [m for m in METRICS.values() if m.table and m.experiment == experiment]


def figures(experiment: str | None = None) -> dict[str, list[Metric]]:
    """figure name -> the metrics drawn in it, one panel each: every workload's figures, and with
    `experiment` that experiment's own."""
    found: dict[str, list[Metric]] = {}
    for metric in METRICS.values():
        if metric.experiment in (None, experiment):
            found.setdefault(metric.figure, []).append(metric)
    return found


TABLED = tabled()
FIGURES = figures()  # a workload's figures
