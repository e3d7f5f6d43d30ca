"""A measured point's record from its raw figures (pure): what each wrk reported and what was sampled around it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from bench import wrk
from bench.config import SATURATED_CPU_SHARE, Point
from bench.flags import CLOCK_STEP_S
from bench.results import ClientFigures, Record
from bench.runners.base import ServerUsage


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ClientRun:
    """One wrk's part of a point: where it ran, its CPU, its report, the machine's load meanwhile."""

    engine: str | None  # the client engine; None on one host
    cpu_s: float
    report: wrk.WrkReport
    host_busy_s: float | None = None  # WrkRun's: None where not measured
    engine_cpu_s: float | None = None
    elapsed_s: float | None = None  # the run start to exit by bench's monotonic clock (wrk times by the wall clock)


def to_record(point: Point, started_at: str, clients: list[ClientRun], before: ServerUsage,
              after: ServerUsage, veth: dict[str, int] | None, server_cpu_count: int) -> Record:
    """Derive every metric of one measured run (pure); several clients' runs count as one, merged exactly."""
    report = wrk.merge([client.report for client in clients])
    # The machine's load: measured by the one-host runners only (other machines' is not this host's).
    host_busy_s, engine_cpu_s = (clients[0].host_busy_s, clients[0].engine_cpu_s) if len(clients) == 1 else (None,) * 2
    # wrk times its run by the wall clock (gettimeofday): a clock step inflates its runtime, so when it says
    # far more than bench's monotonic clock saw, the rates take the monotonic figure (flags: clock_step).
    runtime_s = report.duration_us / 1e6
    elapsed = [client.elapsed_s for client in clients]
    elapsed_s = max(elapsed) if None not in elapsed else None
    duration_s = elapsed_s if elapsed_s is not None and runtime_s - elapsed_s > CLOCK_STEP_S else runtime_s
    user_s = after.cpu_user_s - before.cpu_user_s
    sys_s = after.cpu_sys_s - before.cpu_sys_s
    server_share = (user_s + sys_s) / duration_s / server_cpu_count  # 1.0: every pinned CPU busy

    def bound(client_share: float) -> bool:
        return client_share >= SATURATED_CPU_SHARE and server_share < SATURATED_CPU_SHARE

    client_cpu_s = sum(client.cpu_s for client in clients)
    client_share = max(client.cpu_s for client in clients) / duration_s  # the busiest wrk's (each has one CPU)
    per_client = [asdict(ClientFigures(
        client.engine, client.report.requests, client.report.bytes, sum(client.report.errors.values()),
        client.report.latency_us["p50"], client.report.latency_us["p99"], client.cpu_s,
        client.cpu_s / (client.report.duration_us / 1e6), bound(client.cpu_s / (client.report.duration_us / 1e6))))
        for client in clients] if len(clients) > 1 else None
    per_request_us = 1e6 / report.requests
    latency = report.latency_us
    return Record(
        point.server, point.workload.name, point.connections, point.repeat, status="ok",
        started_at=started_at,
        requests=report.requests, duration_s=duration_s, requests_per_s=report.requests / duration_s,
        wrk_runtime_s=runtime_s, wrk_elapsed_s=elapsed_s,
        bytes=report.bytes, **{f"errors_{kind}": count for kind, count in report.errors.items()},
        **{f"latency_{name}_us": value for name, value in latency.items()},
        server_cpu_user_s=user_s, server_cpu_sys_s=sys_s, server_cpu_share=server_share,
        cpu_us_per_request=(user_s + sys_s) * per_request_us,
        cpu_user_us_per_request=user_s * per_request_us, cpu_sys_us_per_request=sys_s * per_request_us,
        server_peak_rss_kib=after.peak_rss_kib, server_processes=after.processes,
        client_cpu_s=client_cpu_s, client_cpu_share=client_share, client_bound=bound(client_share),
        clients=per_client,
        # The container engine's work while wrk ran (running wrk as an exec): the runner's own cost, apart.
        engine_cpu_share=None if engine_cpu_s is None else engine_cpu_s / duration_s,
        # Whatever else ran on the machine meanwhile (other jobs, bench itself): noise in the figures.
        other_cpu_share=(None if host_busy_s is None or engine_cpu_s is None
                         else max(host_busy_s - user_s - sys_s - client_cpu_s - engine_cpu_s, 0) / duration_s),
        # The server's interface (the veth's end, or the server host's): None when not measured.
        **{f"veth_{key}": value for key, value in (veth or {}).items()},
        veth_tx_per_wrk_byte=veth["tx_bytes"] / report.bytes if veth and report.bytes else None,
        veth_consistent=veth["tx_bytes"] >= report.bytes > 0 if veth else None,
    )
