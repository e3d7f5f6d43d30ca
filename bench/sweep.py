"""The sweep: every point of the plan, through a runner, into records.

The repeats are the outer loop (config.plan): in each, a server is started
fresh for each (server, workload), verified, and reused across that pair's
connection counts; it is warmed up once per connection count (the warm-up is
not recorded). If it dies, the point it died in fails and the next point
starts it again (and verifies it again).

With flame graphs asked for, each (server, workload) then gets one extra run
in the first repeat that is not a record: the server is restarted with perf
support (which costs the interpreter a little), and perf counts its syscalls,
then samples it, while wrk drives it at the largest connection count.
"""

from __future__ import annotations

import http.client
import json
import math
import resource
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path

from bench import holder, procfs, subjects, verify, wrk
from bench.config import SATURATED_CPU_SHARE, Point, SweepConfig, Workload, estimated_s, plan
from bench.errors import BenchError, PointFailed, PointUnsupported
from bench.holder import PER_ADDRESS, PER_HOLDER, IdleConnections, accept_queue, addresses_needed, established_at
from bench.network import Namespaces, Network
from bench.results import FLAMEGRAPH_DIR, ClientFigures, Record, ServerProfile
from bench.runners import Runner, ServerUsage
from netns.config import Topology
from netns.topology import add_client_addresses, remove_client_addresses
from servers.base import UNSUPPORTED_EXIT

WRK_GRACE_S = 10  # beyond duration + timeout before a wrk run counts as hung
IDLE_SETTLE_S = 10.0  # for the server to accept the idle connections the holders have opened ...
IDLE_SETTLE_PER_S = 10_000  # ... plus a second per this many of them
SERVER_SPARE_FDS = 8  # stdio, the listener, the poller: descriptors a server holds besides connections
# A worker is planned for this share of its open-file limit at most: the kernel spreads connections
# over SO_REUSEPORT listeners by a hash, not evenly.
WORKER_FILL = 0.8
THREAD_HEADROOM = 2_000  # tasks left to the rest of the machine when a model wants a thread per connection
PROFILE_LEAD_S = 0.5  # wrk's connection set-up, before perf starts counting
# wrk outlasts perf, so perf never samples a server winding down (or gone idle: an empty graph, "No stack
# counts found"). perf's start-up and write-out (seconds with 65 threads' DWARF stacks on a loaded host) and
# the docker runner's execs come on top of the sampling windows.
PROFILE_TAIL_S = 10.0
SYSCALL_WINDOW_S = 1.5


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ProfilePlan:
    """Flame graphs in the sweep: what to sample, where to write, whom to tell."""

    run_dir: Path  # graphs go to its flamegraphs/
    duration_s: float  # perf record's sampling time
    syscall_window_s: float  # perf stat's counting time, before the sampling
    on_profile: Callable[[ServerProfile], None]


@dataclass(frozen=True)
class HostLimits:
    """What the host lets one server have: past these, a point is unsupported, not failed."""

    open_files: int  # per process: the RLIMIT_NOFILE every server inherits from bench
    threads: int  # threads one model may start (the kernel's limit less THREAD_HEADROOM)
    threads_because: str  # the kernel setting that sets it


def open_file_limit() -> int:
    """The open-file limit the servers inherit (bench raised its soft limit to the hard one at start)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def host_limits() -> HostLimits:
    threads, because = procfs.thread_limit()
    return HostLimits(open_file_limit(), threads - THREAD_HEADROOM, because)


def estimated_wall_s(config: SweepConfig) -> float:
    """The sweep's wall time on this host, from its plan (config.estimated_s) less the points it cannot run."""
    limits = host_limits()
    return estimated_s(config, lambda point: unsupported(point, limits) is None)


def run_sweep(config: SweepConfig, runner: Runner, net: Network, on_record: Callable[[Record], None],
              profiling: ProfilePlan | None = None, wrk_dir: Path | None = None) -> None:
    """Measure every point of `config`, handing each record to `on_record` (and, with `profiling`,
    each (server, workload)'s profile to its `on_profile`); stop everything at the end. `wrk_dir`:
    where the wrk reports behind each merged point go (several clients)."""
    limits = host_limits()
    try:
        for (repeat, _, _), points in groupby(plan(config), key=lambda p: (p.repeat, p.server, p.workload)):
            points = list(points)
            runs_here = run_group(runner, net, config, points, on_record, limits, wrk_dir)
            profiled = max(points, key=lambda p: p.connections)
            if profiling is not None and repeat == 1 and runs_here and unsupported(profiled, limits) is None:
                profiling.on_profile(profile_point(runner, net, config, profiled, profiling))
    finally:
        runner.stop()


def run_group(runner: Runner, net: Network, config: SweepConfig, points: list[Point],
              on_record: Callable[[Record], None], limits: HostLimits, wrk_dir: Path | None = None) -> bool:
    """The points of one (server, workload) in one repeat, with one server started for them (again if it dies).
    False when the server said it cannot run here (its points are recorded unsupported)."""
    session: ServerSession | None = None
    broken: PointFailed | None = None  # why the server cannot be benchmarked: its later points end the same way
    warmed: set[int] = set()
    try:
        for point in points:
            if reason := unsupported(point, limits):
                on_record(Record(point.server, point.workload.name, point.connections, point.repeat,
                                 status="unsupported", failure=reason, started_at=now()))
                continue
            try:
                if broken is not None:
                    raise broken.with_traceback(None)
                if session is None or not session.alive:
                    if session is not None:
                        session.stop()
                    session, warmed = ServerSession(runner, net, config, point), set()
                    try:
                        session.start()
                    except PointFailed as failure:
                        broken = failure
                        raise
                if point.connections not in warmed:
                    run_wrk(runner, net, config, point, session.port, config.warmup_s)
                    warmed.add(point.connections)
                record = measure(runner, net, config, point, session.port, wrk_dir)
            except PointFailed as failure:
                status = "unsupported" if isinstance(failure, PointUnsupported) else "failed"
                record = Record(point.server, point.workload.name, point.connections, point.repeat,
                                status=status, failure=str(failure), started_at=now())
            if session is not None and session.idle is not None:
                for name, value in session.idle.figures.items():
                    setattr(record, name, value)
            on_record(record)
    finally:
        if session is not None:
            session.stop()
    return not isinstance(broken, PointUnsupported)


def profile_point(runner: Runner, net: Network, config: SweepConfig, point: Point,
                  profiling: ProfilePlan) -> ServerProfile:
    """One wrk run, not recorded, against the point's server restarted profiled: syscalls counted, then sampled."""
    profile = ServerProfile(point.server, point.workload.name, point.connections, "failed", "", "none")
    try:
        with ServerSession(runner, net, config, point, profiled=True) as session:
            # perf samples on-CPU, then records off-CPU, each for duration_s.
            load_s = math.ceil(PROFILE_LEAD_S + profiling.syscall_window_s + 2 * profiling.duration_s
                               + PROFILE_TAIL_S)
            with ThreadPoolExecutor(max_workers=1) as pool:
                load = pool.submit(run_wrk, runner, net, config, point, session.port, load_s)
                time.sleep(PROFILE_LEAD_S)
                syscalls = runner.count_syscalls(profiling.syscall_window_s)
                result = runner.profile(profiling.duration_s, profiling.run_dir / FLAMEGRAPH_DIR,
                                        f"{point.workload.name}-{point.server}")
                report = wrk.merge([client.report for client in load.result()])
    except (PointFailed, ValueError) as failure:  # ValueError: wrk's report unreadable
        profile.message = str(failure)
        return profile
    profile.status, profile.message, profile.python_method = result.status, result.message, result.python_method
    profile.notes = result.notes
    profile.svg, profile.folded, profile.offcpu_svg, profile.offcpu_folded, profile.wall_svg = (
        path and path.relative_to(profiling.run_dir).as_posix()
        for path in (result.svg, result.folded, result.offcpu_svg, result.offcpu_folded, result.wall_svg))
    profile.handoff_us, profile.offcpu_message = result.handoff_us, result.offcpu_message
    profile.requests_per_s = report.requests / (report.duration_us / 1e6)
    profile.syscalls_per_request = syscalls.per_request(profile.requests_per_s)
    profile.syscalls_message = syscalls.message
    return profile


def unsupported(point: Point, limits: HostLimits) -> str | None:
    """Why the point's server cannot serve it, by its description or on this host (reported as such, never
    run), else None."""
    subject = subjects.get(point.server)
    route = point.workload.route
    if not subject.serves(route):
        return f"{subject.name} serves only {', '.join(subject.routes)} ({subject.model}), not {route}"
    if subject.keep_alive_only and point.workload.close:
        return f"{subject.name} answers only kept-alive connections ({subject.model}), not `Connection: close`"
    connections = point.workload.idle + point.connections
    need = f"{point.workload.idle:,} idle + {point.connections} active connections need"
    descriptors = connections + SERVER_SPARE_FDS
    if (fd_setsize := subject.limits.fd_setsize) is not None and descriptors > fd_setsize:
        return (f"{subject.name} watches descriptors below FD_SETSIZE ({fd_setsize}) only; "
                f"{need} about {descriptors:,}")
    reasons = []
    if subject.limits.processes == "one" and descriptors > limits.open_files:
        spread = [s.name for s in subjects.REGISTRY.subjects.values() if s.limits.processes == "workers"]
        reasons.append(f"one process may open {limits.open_files:,} files on this host (its RLIMIT_NOFILE, "
                       f"raised to the hard limit) and {need} about {descriptors:,}; only the multi-process "
                       f"servers ({', '.join(spread)}) spread them over more processes")
    if subject.limits.thread_per_connection and connections > limits.threads:
        reasons.append(f"a thread per connection: {connections:,} threads, and this kernel allows about "
                       f"{limits.threads:,} to one process ({limits.threads_because}, less {THREAD_HEADROOM:,} "
                       f"for the rest of the machine)")
    return "; ".join(reasons) or None


def server_workers(point: Point, open_files: int) -> int | None:
    """Processes a multi-process server needs for the point's connections to fit under each one's
    open-file limit; None: its default (one nginx worker, a reuseport worker per CPU) will do."""
    if subjects.get(point.server).limits.processes != "workers":
        return None
    per_worker = int((open_files - SERVER_SPARE_FDS) * WORKER_FILL)
    needed = math.ceil((point.workload.idle + point.connections) / per_worker)
    return needed if needed > 1 else None


@dataclass
class Idle:
    """The idle connections of a session, and what opening them cost."""

    topo: Topology
    extra_addresses: int  # added to the client for this session, removed with it
    connections: IdleConnections | None = None
    figures: dict[str, float | int | None] = field(default_factory=dict)  # Record fields (idle_*)

    def close(self) -> None:
        try:
            if self.connections is not None:
                self.connections.close()
        finally:
            if self.extra_addresses:
                remove_client_addresses(self.topo)


class ServerSession:
    """The point's server started, verified, and holding the workload's idle connections; stopped on exit.

    `start()` raises PointFailed for anything that goes wrong on the way (the server not answering or
    answering wrongly, a holder or `ss` failing), with the server stopped again: one point fails, the
    sweep goes on. Only BenchError (the sweep cannot run at all) and interrupts pass through.
    """

    def __init__(self, runner: Runner, net: Network, config: SweepConfig, point: Point,
                 profiled: bool = False) -> None:
        self.runner, self.net, self.config, self.point, self.profiled = runner, net, config, point, profiled
        self.port = 0
        self.idle: Idle | None = None

    def __enter__(self) -> ServerSession:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self.port = start_verified(self.runner, self.net, self.config, self.point, self.profiled)
            if self.point.workload.idle:
                self.idle = hold_idle(self.runner, self.net, self.port, self.point.workload.idle)
        except (PointFailed, BenchError):
            self.stop()
            raise
        except Exception as error:
            self.stop()
            raise PointFailed(with_server_log(self.runner, f"server start failed: {error}")) from error

    @property
    def alive(self) -> bool:
        return self.runner.server_exit_code() is None

    def close_idle(self) -> None:
        if self.idle is not None:
            idle, self.idle = self.idle, None
            idle.close()

    def stop(self) -> None:
        self.close_idle()
        self.runner.stop_server()


def hold_idle(runner: Runner, net: Network, port: int, count: int, per_holder: int = PER_HOLDER,
              per_address: int = PER_ADDRESS) -> Idle:
    """Open `count` idle connections from the client namespace (as many holders and source addresses as
    the limits need), wait until the server has accepted them, and measure what they cost."""
    if not isinstance(net, Namespaces):
        raise PointFailed("idle connections are held from the client namespace of the one-host topology")
    topo = net.topo
    extra = addresses_needed(count, per_address) - 1
    server_before, kernel_before = runner.server_usage().rss_kib, procfs.kernel_socket_kib()
    started = time.monotonic()
    idle = Idle(topo, extra)
    try:
        sources = [topo.client_addr, *(add_client_addresses(topo, extra) if extra else [])]
        idle.connections = IdleConnections(topo.client_ns, topo.server_addr, port, count, sources, topo.server_ns,
                                           per_holder, per_address)
        report = idle.connections.open()
        # The server side lags by its accept loop: give it a bounded moment to take them all, unless it
        # has stopped taking any.
        deadline = time.monotonic() + IDLE_SETTLE_S + count / IDLE_SETTLE_PER_S
        last, last_change = None, time.monotonic()
        while time.monotonic() < deadline:
            on_server, queued = seen = established_at(topo.server_ns, port), accept_queue(topo.server_ns, port)
            if on_server >= report.held and not queued:
                break
            if seen != last:
                last, last_change = seen, time.monotonic()
            elif queued and time.monotonic() - last_change >= holder.ACCEPT_STALL_S:
                raise PointFailed(f"the server stopped accepting: {queued:,} of {count:,} idle connections waited "
                                  f"in its accept queue, none taken for {holder.ACCEPT_STALL_S:g} s")
            time.sleep(0.2)
        opened_s = time.monotonic() - started
        server_after, kernel_after = runner.server_usage().rss_kib, procfs.kernel_socket_kib()
    except BaseException:
        idle.close()
        raise

    def per_connection(kib: int) -> float | None:
        return kib / report.held if report.held else None

    idle.figures = {
        "idle_held": report.held, "idle_on_server": on_server, "idle_open_s": opened_s,
        "idle_holders": len(idle.connections.chunks), "idle_sources": extra + 1,
        "idle_server_rss_before_kib": server_before, "idle_server_rss_kib": server_after,
        "idle_server_kib_per_connection": per_connection(server_after - server_before),
        "idle_holder_kib_per_connection": per_connection(report.rss_kib - report.rss_kib_before),
        "idle_kernel_kib_per_connection": per_connection(kernel_after - kernel_before),
    }
    return idle


def start_verified(runner: Runner, net: Network, config: SweepConfig, point: Point,
                   profiled: bool = False) -> int:
    """Start the point's server and check its answers; its port, or PointFailed saying why it is unusable."""
    port = net.free_port()
    runner.start_server(point.server, net.server_addr, port, profiled, server_workers(point, open_file_limit()))
    problem = verify.wait_until_answering(net, port, runner.server_exit_code, config.ready_timeout_s)
    if problem is None:
        try:
            if found := verify.problems(net, port, point.workload):
                problem = "verification failed: " + "; ".join(found)
        except (OSError, http.client.HTTPException) as error:
            problem = f"verification failed: {error!r}"
    if problem is not None:
        if runner.server_exit_code() == UNSUPPORTED_EXIT:  # the server's last line says why
            raise PointUnsupported((runner.server_log().splitlines() or [problem])[-1].removeprefix("servers: "))
        raise PointFailed(with_server_log(runner, problem))
    return port


# A path per route for the verify gate of a user's subject: small, quick answers.
ROUTE_PATHS = {"/": "/", "/bytes/N": "/bytes/1024", "/sleep/MS": "/sleep/1", "/cpu/US": "/cpu/100"}


def check_subject(runner: Runner, net: Network, config: SweepConfig, subject: subjects.Subject) -> None:
    """The gate before a run for a subject from a user's file: it starts and answers every route it declares
    right, else BenchError with one line naming the step (no run directory is made)."""
    point = Point(subject.name, Workload("verify", "/"), 1, 0)
    try:
        with ServerSession(runner, net, config, point) as session:
            for route in subject.routes:
                if found := verify.problems(net, session.port, Workload("verify", ROUTE_PATHS[route])):
                    raise PointFailed(f"route {route}: " + "; ".join(found))
    except (PointFailed, OSError, http.client.HTTPException) as failure:
        raise BenchError(f"subject {subject.name} ({subject.directory}): {failure}") from None


def with_server_log(runner: Runner, reason: str) -> str:
    log = " | ".join(runner.server_log().splitlines()[-3:])
    return f"{reason} (server output: {log})" if log else reason


@dataclass(frozen=True)
class ClientRun:
    """One wrk's part of a point: where it ran, its CPU, its report, the machine's load meanwhile."""

    engine: str | None  # the client engine; None on one host
    cpu_s: float
    report: wrk.WrkReport
    host_busy_s: float | None = None  # WrkRun's: None where not measured
    engine_cpu_s: float | None = None


def run_wrk(runner: Runner, net: Network, config: SweepConfig, point: Point, port: int,
            duration_s: int) -> list[ClientRun]:
    """One bounded wrk run per client (started together) that every side survived, else PointFailed."""
    # A point's connections are the server's: several clients share them evenly (the CLI checks they divide).
    clients = max(len(config.client_engines), 1)
    args = wrk.command(wrk.url(net.server_addr, port, point.workload.path), point.workload,
                       point.connections // clients, duration_s, config.wrk_threads, config.wrk_timeout_s,
                       histogram=clients > 1)  # several runs merge through their histograms
    runs = runner.run_wrk(args, timeout_s=duration_s + config.wrk_timeout_s + WRK_GRACE_S)
    if (code := runner.server_exit_code()) is not None:
        raise PointFailed(with_server_log(runner, f"server exited with code {code} during the run"))
    clients = []
    for run in runs:
        where = f" on {run.engine}" if run.engine else ""
        if run.returncode != 0:
            raise PointFailed(f"wrk{where} exited with code {run.returncode}: {run.stderr.strip()[-300:]}")
        try:
            clients.append(ClientRun(run.engine, run.cpu_s, wrk.parse(run.stdout), run.host_busy_s,
                                     run.engine_cpu_s))
        except ValueError as error:
            raise PointFailed(f"wrk{where}: {error}") from None
    return clients


def measure(runner: Runner, net: Network, config: SweepConfig, point: Point, port: int,
            wrk_dir: Path | None = None) -> Record:
    started_at = now()
    # The server's figures bracket the run; the machine's load is the runner's, sampled around wrk alone.
    server_before, veth_before = runner.server_usage(), net.counters()
    duration_s = point.workload.duration_s or config.duration_s
    clients = run_wrk(runner, net, config, point, port, duration_s)
    veth_after, server_after = net.counters(), runner.server_usage()
    if wrk_dir is not None and len(clients) > 1:
        keep_reports(wrk_dir, point, clients)
    if sum(client.report.requests for client in clients) == 0:
        raise PointFailed(f"no responses in {duration_s} s; wrk errors: "
                          f"{wrk.merge([client.report for client in clients]).errors}")
    veth = veth_before and {key: veth_after[key] - veth_before[key] for key in veth_before}
    return to_record(point, started_at, clients, server_before, server_after, veth, len(config.server_cpus))


def keep_reports(wrk_dir: Path, point: Point, clients: list[ClientRun]) -> None:
    """Each client's report (with its latency histogram) behind a merged point: the merge can be redone."""
    wrk_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{point.workload.name}-{point.server}-c{point.connections}-r{point.repeat}"
    for index, client in enumerate(clients, 1):
        (wrk_dir / f"{stem}-client{index}.json").write_text(
            json.dumps({"engine": client.engine, **asdict(client.report)}) + "\n")


def to_record(point: Point, started_at: str, clients: list[ClientRun], before: ServerUsage,
              after: ServerUsage, veth: dict[str, int] | None, server_cpu_count: int) -> Record:
    """Derive every metric of one measured run (pure); several clients' runs count as one, merged exactly."""
    report = wrk.merge([client.report for client in clients])
    # The machine's load: measured by the one-host runners only (other machines' is not this host's).
    host_busy_s, engine_cpu_s = (clients[0].host_busy_s, clients[0].engine_cpu_s) if len(clients) == 1 else (None,) * 2
    duration_s = report.duration_us / 1e6
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
