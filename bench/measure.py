"""One measured point: bounded wrk runs (one per client), the server's figures around them, its record."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import flags, wrk
from bench.config import Point, SweepConfig
from bench.errors import PointFailed
from bench.network import Network
from bench.records import ClientRun, now, to_record
from bench.results import Record
from bench.runners import Runner
from bench.session import with_server_log

WRK_GRACE_S = 10  # beyond duration + timeout before a wrk run counts as hung


@dataclass
class WrkClock:
    """Wall time during which wrk ran, over a sweep's runs (warm-ups and profiled runs too): its efficiency."""

    seconds: float = 0.0


def run_wrk(runner: Runner, net: Network, config: SweepConfig, point: Point, port: int,
            duration_s: int, clock: WrkClock | None = None) -> list[ClientRun]:
    """One bounded wrk run per client (started together) that every side survived, else PointFailed."""
    # A point's connections are the server's: several clients share them evenly (the CLI checks they divide).
    clients = max(len(config.client_engines), 1)
    args = wrk.command(wrk.url(net.server_addr, port, point.workload.path), point.workload,
                       point.connections // clients, duration_s, config.wrk_threads, config.wrk_timeout_s,
                       histogram=clients > 1)  # several runs merge through their histograms
    started = time.monotonic()
    try:
        runs = runner.run_wrk(args, timeout_s=duration_s + config.wrk_timeout_s + WRK_GRACE_S)
    finally:
        elapsed_s = time.monotonic() - started
        if clock is not None:
            clock.seconds += elapsed_s
    if (code := runner.server_exit_code()) is not None:
        raise PointFailed(with_server_log(runner, f"server exited with code {code} during the run"))
    clients = []
    for run in runs:
        where = f" on {run.engine}" if run.engine else ""
        if run.returncode != 0:
            raise PointFailed(f"wrk{where} exited with code {run.returncode}: {run.stderr.strip()[-300:]}")
        try:
            clients.append(ClientRun(run.engine, run.cpu_s, wrk.parse(run.stdout), run.host_busy_s,
                                     run.engine_cpu_s, elapsed_s))
        except ValueError as error:
            raise PointFailed(f"wrk{where}: {error}") from None
    return clients


def measure(runner: Runner, net: Network, config: SweepConfig, point: Point, port: int,
            wrk_dir: Path | None = None, clock: WrkClock | None = None, attempt: int = 1) -> Record:
    """One measured attempt at the point, its record flagged (bench/flags.py)."""
    started_at = now()
    # The server's figures bracket the run; the machine's load is the runner's, sampled around wrk alone.
    server_before, veth_before = runner.server_usage(), net.counters()
    intervals = net.intervals()
    duration_s = point.workload.duration_s or config.duration_s
    with intervals or nullcontext():
        clients = run_wrk(runner, net, config, point, port, duration_s, clock)
    veth_after, server_after = net.counters(), runner.server_usage()
    if wrk_dir is not None and len(clients) > 1:
        keep_reports(wrk_dir, point, clients, attempt)
    if sum(client.report.requests for client in clients) == 0:
        raise PointFailed(f"no responses in {duration_s} s; wrk errors: "
                          f"{wrk.merge([client.report for client in clients]).errors}")
    veth = veth_before and {key: veth_after[key] - veth_before[key] for key in veth_before}
    record = to_record(point, started_at, clients, server_before, server_after, veth, len(config.server_cpus))
    record.attempt = attempt
    record.interval_tx_bytes = intervals.per_interval() if intervals else None
    flags.add_flags(record, flags.point_flags(record, duration_s, config.wrk_timeout_s))
    return record


def keep_reports(wrk_dir: Path, point: Point, clients: list[ClientRun], attempt: int = 1) -> None:
    """Each client's report (with its latency histogram) behind a merged point: the merge can be redone."""
    wrk_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{point.workload.name}-{point.server}-c{point.connections}-r{point.repeat}"
    stem += f"-a{attempt}" if attempt > 1 else ""
    for index, client in enumerate(clients, 1):
        (wrk_dir / f"{stem}-client{index}.json").write_text(
            json.dumps({"engine": client.engine, **asdict(client.report)}) + "\n")


