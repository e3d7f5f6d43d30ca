"""Open-loop points: a constant request rate from openloop (bench/loadgen), latency without coordinated omission.

An open-loop workload's points at one connection count start with wrk's closed-loop peak (a normal record);
each rate of --rates is then offered by openloop for the sweep's duration, the fractions scaled by that peak.
A point records what was offered and achieved, the corrected and uncorrected latency with their full
histograms (for exact merges and recomputed percentiles), the latency of each route of a mix, and two flags:
`generator_bound` (the generator, not the server, limited the point) and `overloaded` (a backlog: latency
kept growing through the run, or requests were still waiting at its end).
"""

from __future__ import annotations

from collections.abc import Sequence

from bench import loadgen, subjects, wrk
from bench.config import (
    DEFAULT_RATES,
    LATENCY_CONNECTIONS,
    SATURATED_CPU_SHARE,
    Point,
    Rate,
    SweepConfig,
    Workload,
    route_of,
)
from bench.errors import PointFailed
from bench.network import Network
from bench.results import Record
from bench.runners import Runner

ACHIEVED_SHARE = 0.99  # of the target rate, below which the generator fell behind
# A backlog: the mean corrected latency rose third by third through the run, the last third's at least twice
# the first's and higher by at least 1 ms and 1 % of the run's length (one stall or a descheduled moment on a
# shared host moves one third, not all three in order).
GROWTH_OVERLOADED = 2.0
GROWTH_MIN_US = 1000.0
GROWTH_MIN_SHARE = 0.01
UNANSWERED_OVERLOADED = 0.01  # share of the requests sent still waiting when the drain ended
CONNECT_S = 2  # openloop's own bound for opening its connections
STARTUP_GRACE_S = 10  # beyond connect + duration + drain before the run counts as hung


def parse_rates(texts: Sequence[str]) -> tuple[Rate, ...]:
    """--rates: requests/s (> 1) or fractions of the closed-loop peak (0 < f <= 10, written with a point or
    as N×peak); ValueError with one line saying what to write instead."""
    rates = []
    for text in texts:
        bare = text.removesuffix("xpeak").removesuffix("×peak")
        try:
            value = float(bare)
        except ValueError:
            raise ValueError(f"--rates takes numbers: requests/s (50000) or fractions of the closed-loop peak "
                             f"(0.5), not {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise ValueError(f"--rates must be positive: write e.g. 50000 (requests/s) or 0.5 (half the peak), "
                             f"not {text!r}")
        fraction = bare != text or ("." in bare and value <= 10)
        if not fraction and value < 10:
            raise ValueError(f"--rates {text!r} is ambiguous: write {value:.1f} for {value:g}× the closed-loop "
                             f"peak, or a rate of at least 10 requests/s")
        rates.append(Rate(value, fraction))
    return tuple(rates)


def parse_mix(texts: Sequence[str]) -> tuple[tuple[float, str], ...]:
    """--mix PERCENT:PATH ...: weights summing to 100 over routes the servers know; ValueError (one line) else."""
    mix = []
    for text in texts:
        weight, colon, path = text.partition(":")
        try:
            percent = float(weight)
        except ValueError:
            percent = -1.0
        if not colon or not path.startswith("/") or not percent > 0:
            raise ValueError(f"--mix takes PERCENT:PATH pairs such as 99:/ 1:/sleep/20, not {text!r}")
        if route_of(path) not in subjects.ROUTES or not path_argument_ok(path):
            raise ValueError(f"--mix {text!r}: {path} is no route; the routes are {', '.join(subjects.ROUTES)} "
                             f"(e.g. /bytes/1024, /sleep/20, /cpu/2000)")
        mix.append((percent, path))
    if abs(sum(p for p, _ in mix) - 100) > 1e-6:
        raise ValueError(f"--mix weights are percents and must sum to 100, not {sum(p for p, _ in mix):g}: "
                         f"e.g. 99:/ 1:/sleep/20")
    return tuple(mix)


def path_argument_ok(path: str) -> bool:
    _, _, argument = path[1:].partition("/")
    return argument == "" or argument.isdigit()


def mix_workload(mix: tuple[tuple[float, str], ...], connections: tuple[int, ...]) -> Workload:
    """The workload --mix describes: open loop, its first path verified as the server's answer."""
    return Workload("latency-mix", mix[0][1], connections=connections, open_loop=True, mix=mix)


def resolve(rates: Sequence[str] | None, mix: Sequence[str] | None,
            workloads: Sequence[Workload]) -> tuple[tuple[Rate, ...], tuple[Workload, ...]]:
    """The command line's --rates and --mix: (the rates, the workloads --mix adds); ValueError with one line."""
    mixed = (mix_workload(parse_mix(mix), LATENCY_CONNECTIONS),) if mix else ()
    if rates and not any(w.open_loop for w in [*workloads, *mixed]):
        raise ValueError("--rates are for open-loop workloads: add --experiments latency (or --workloads "
                         "latency-plaintext, or a --mix)")
    return (parse_rates(rates) if rates else DEFAULT_RATES), mixed


def program(runner: str) -> str:
    """openloop as the runner starts it: the image's /usr/local/bin one, or the host's compiled copy."""
    return loadgen.NAME if runner == "docker" else loadgen.binary()


def routes(workload: Workload) -> list[loadgen.Route]:
    return [loadgen.Route(path, weight) for weight, path in workload.mix] or [loadgen.Route(workload.path, 100)]


def target_rate(point: Point, peak: float | None) -> float:
    rate = point.rate
    assert rate is not None
    if not rate.fraction:
        return rate.value
    if not peak:
        raise PointFailed(f"no closed-loop peak to scale {rate} by: its wrk run at {point.connections} "
                          f"connections failed")
    return rate.value * peak


def backlog(series: Sequence[Sequence[int]]) -> tuple[float, float, bool] | None:
    """How the corrected latency grew through the run, by intended send time: the last third's mean over the
    first third's, their difference in µs, and whether each third's mean exceeded the one before; None when
    a third has no answers."""
    third = len(series) // 3

    def mean(part: Sequence[Sequence[int]]) -> float | None:
        answered = sum(s[1] for s in part)
        return sum(s[2] for s in part) / answered if answered else None

    means = [mean(series[:third]), mean(series[third:-third]), mean(series[-third:])] if third else [None]
    if None in means:
        return None
    first, middle, last = means
    return last / max(first, 1.0), last - first, first < middle < last


def overloaded(report: loadgen.Report) -> tuple[float | None, bool]:
    """(growth, overloaded): latency kept growing through the run, or requests were left waiting at its end."""
    found = backlog(report.series)
    rise_needed = max(GROWTH_MIN_US, GROWTH_MIN_SHARE * report.duration_us)
    grew = found is not None and found[0] >= GROWTH_OVERLOADED and found[1] >= rise_needed and found[2]
    left = report.capped or report.unanswered > UNANSWERED_OVERLOADED * max(report.sent, 1)
    return found and found[0], grew or left


def as_wrk(report: loadgen.Report) -> wrk.WrkReport:
    """The shape sweep.to_record reads (counts, errors, latency in µs), for the figures both kinds share."""
    figures = loadgen.figures_us(report.histogram_ns)
    latency = {name: figures.get(name) for name in ("mean", "max", *wrk.PERCENTILES)} | {"stdev": None}
    histogram = wrk.merge_histograms([tuple((value // 1000, count) for value, count in report.histogram_ns)])
    return wrk.WrkReport(report.requests, report.duration_us, report.bytes, dict(report.errors), latency, histogram)


def latency_fields(prefix: str, histogram: loadgen.Histogram) -> dict[str, float | None]:
    return {f"{prefix}_{name}_us": value for name, value in loadgen.figures_us(histogram).items()}


def open_figures(report: loadgen.Report, offered: float, peak: float | None, generator_share: float) -> dict:
    """The open-loop fields of a record (pure), from the merged report of its clients."""
    growth, overload = overloaded(report)
    achieved = report.achieved_rate
    classes = {route.path: {"weight": route.weight, "requests": route.requests,
                            **latency_fields("latency", route.histogram_ns),
                            "histogram_ns": [list(pair) for pair in route.histogram_ns]}
               for route in report.routes} if len(report.routes) > 1 else None
    return {
        "offered_rate": offered, "achieved_rate": achieved, "peak_rate": peak,
        "generator_bound": (achieved < ACHIEVED_SHARE * offered and not report.capped
                            or generator_share >= SATURATED_CPU_SHARE),
        "generator_cpu_share": generator_share, "generator_late_max_us": report.late_max_us,
        "overloaded": overload, "latency_growth": growth, "unanswered": report.unanswered,
        "reconnects": report.reconnects,
        **latency_fields("latency", report.histogram_ns), "latency_stdev_us": None,
        **latency_fields("latency_uncorrected", report.uncorrected_ns),
        "latency_histogram_ns": [list(pair) for pair in report.histogram_ns],
        "latency_uncorrected_histogram_ns": [list(pair) for pair in report.uncorrected_ns],
        "latency_series": [list(s) for s in report.series], "latency_interval_ms": report.interval_ms,
        "classes": classes,
    }


def measure(runner: Runner, net: Network, config: SweepConfig, point: Point, port: int,
            peak: float | None) -> Record:
    """One open-loop point: the rate split over the clients (started together), their reports merged exactly."""
    from bench.records import ClientRun, now, to_record  # they import the config, as this module does
    from bench.session import with_server_log

    started_at, offered = now(), target_rate(point, peak)
    duration_s = point.workload.duration_s or config.duration_s
    clients = max(len(config.client_engines), 1)
    args = loadgen.command(program(config.runner), net.server_addr, port, offered / clients,
                           point.connections // clients, duration_s, config.wrk_timeout_s,
                           routes(point.workload), point.workload.vary, seed=point.repeat)
    server_before, veth_before = runner.server_usage(), net.counters()
    runs = runner.run_wrk(args, timeout_s=CONNECT_S + duration_s + 2 * config.wrk_timeout_s
                          + STARTUP_GRACE_S)
    veth_after, server_after = net.counters(), runner.server_usage()
    if (code := runner.server_exit_code()) is not None:
        raise PointFailed(with_server_log(runner, f"server exited with code {code} during the run"))
    reports, shares, client_runs = [], [], []
    for run in runs:
        where = f" on {run.engine}" if run.engine else ""
        if run.returncode != 0:
            raise PointFailed(f"openloop{where} exited with code {run.returncode}: {run.stderr.strip()[-300:]}")
        try:
            report = loadgen.parse(run.stdout)
        except (ValueError, TypeError) as error:
            raise PointFailed(f"openloop{where}: {error}") from None
        reports.append(report)
        # Its CPU over the time it drove the server (the schedule and the drain; connecting is brief).
        shares.append(run.cpu_s / ((report.duration_us + report.drain_us) / 1e6))
        client_runs.append(ClientRun(run.engine, run.cpu_s, as_wrk(report), run.host_busy_s, run.engine_cpu_s))
    merged = loadgen.merge(reports)
    if merged.requests == 0:
        raise PointFailed(f"no responses at {offered:.0f} requests/s; openloop errors: {merged.errors}")
    veth = veth_before and {key: veth_after[key] - veth_before[key] for key in veth_before}
    record = to_record(point, started_at, client_runs, server_before, server_after, veth, len(config.server_cpus))
    for name, value in open_figures(merged, offered, peak, max(shares)).items():
        setattr(record, name, value)
    record.client_bound = record.generator_bound  # the flag other tools read: the client set the figures
    return record
