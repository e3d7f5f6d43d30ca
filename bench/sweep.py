"""The sweep: every point of the plan, through a runner, into records.

The repeats are the outer loop (config.plan): in each, a server is started
fresh for each (server, workload), verified, and reused across that pair's
connection counts; it is warmed up once per connection count (the warm-up is
not recorded). If it dies, the point it died in fails and the next point
starts it again (and verifies it again). A repeat flagged disturbed or
stalled (bench/flags.py) is measured again on the same server, at most
`config.remeasure` more times; every attempt stays a record, the replaced
ones naming their replacement in `superseded_by`. `bench resume` hands in
the points recorded already (Progress.done): they are skipped.

With flame graphs asked for, each (server, workload) then gets one extra run
in the first repeat that is not a record: the server is restarted with perf
support (which costs the interpreter a little), and perf counts its syscalls,
then samples it, while wrk drives it at the largest connection count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from bench import flags, openloop, wrk
from bench.config import Point, SweepConfig, plan
from bench.errors import PointFailed, PointUnsupported
from bench.limits import HostLimits, host_limits, unsupported
from bench.measure import WrkClock, measure, run_wrk
from bench.network import Network
from bench.records import now
from bench.results import FLAMEGRAPH_DIR, Record, ServerProfile
from bench.runners import Runner
from bench.session import ServerSession

PROFILE_LEAD_S = 0.5  # wrk's connection set-up, before perf starts counting
# wrk outlasts perf, so perf never samples a server winding down (or gone idle: an empty graph, "No stack
# counts found"). perf's start-up and write-out (seconds with 65 threads' DWARF stacks on a loaded host) and
# the docker runner's execs come on top of the sampling windows.
PROFILE_TAIL_S = 10.0
SYSCALL_WINDOW_S = 1.5


@dataclass(frozen=True)
class ProfilePlan:
    """Flame graphs in the sweep: what to sample, where to write, whom to tell."""

    run_dir: Path  # graphs go to its flamegraphs/
    duration_s: float  # perf record's sampling time
    syscall_window_s: float  # perf stat's counting time, before the sampling
    on_profile: Callable[[ServerProfile], None]


@dataclass
class Progress:
    """What a sweep is told to skip (bench resume) and what it adds up (its efficiency)."""

    done: set[tuple] = field(default_factory=set)  # Record.key of the points recorded
    profiled: set[tuple[str, str]] = field(default_factory=set)  # (server, workload) with a profile already
    clock: WrkClock = field(default_factory=WrkClock)


def run_sweep(config: SweepConfig, runner: Runner, net: Network, on_record: Callable[[Record], None],
              profiling: ProfilePlan | None = None, wrk_dir: Path | None = None,
              progress: Progress | None = None) -> None:
    """Measure every point of `config` not in `progress.done`, handing each record to `on_record` (and, with
    `profiling`, each (server, workload)'s profile to its `on_profile`); stop everything at the end. `wrk_dir`:
    where the wrk reports behind each merged point go (several clients)."""
    limits = host_limits()
    progress = progress or Progress()
    try:
        for (repeat, server, workload), points in groupby(plan(config), key=lambda p: (p.repeat, p.server,
                                                                                        p.workload)):
            points = list(points)
            todo = [p for p in points if p.key not in progress.done]
            runs_here = run_group(runner, net, config, todo, on_record, limits, wrk_dir, progress.clock)
            profiled = max(points, key=lambda p: p.connections)
            if (profiling is not None and repeat == 1 and runs_here and unsupported(profiled, limits) is None
                    and (server, workload.name) not in progress.profiled):
                profiling.on_profile(profile_point(runner, net, config, profiled, profiling, progress.clock))
    finally:
        runner.stop()


def run_group(runner: Runner, net: Network, config: SweepConfig, points: list[Point],
              on_record: Callable[[Record], None], limits: HostLimits, wrk_dir: Path | None = None,
              clock: WrkClock | None = None) -> bool:
    """The points of one (server, workload) in one repeat, with one server started for them (again if it dies).
    A repeat flagged with one of flags.REMEASURED_FOR is measured again, config.remeasure times at most; every
    attempt is recorded. False when the server said it cannot run here (its points are recorded unsupported)."""
    session: ServerSession | None = None
    broken: PointFailed | None = None  # why the server cannot be benchmarked: its later points end the same way
    warmed: set[int] = set()
    peaks: dict[int, float] = {}  # an open-loop workload's closed-loop peak per connection count, measured first

    def attempt(point: Point, number: int) -> Record:
        nonlocal session, broken, warmed
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
                run_wrk(runner, net, config, point, session.port, config.warmup_s, clock)
                warmed.add(point.connections)
            if point.rate is None:
                record = measure(runner, net, config, point, session.port, wrk_dir, clock, number)
                peaks[point.connections] = record.requests_per_s
            else:
                record = openloop.measure(runner, net, config, point, session.port, peaks.get(point.connections))
                record.attempt = number
        except PointFailed as failure:
            net.counters()  # the veth gone raises TopologyError: the sweep stops, not every later point failing
            status = "unsupported" if isinstance(failure, PointUnsupported) else "failed"
            record = Record(point.server, point.workload.name, point.connections, point.repeat,
                            status=status, failure=str(failure), started_at=now(), attempt=number)
        record.rate_asked = point.rate and str(point.rate)
        if session is not None and session.idle is not None:
            for name, value in session.idle.figures.items():
                setattr(record, name, value)
        return record

    try:
        for point in points:
            if reason := unsupported(point, limits):
                on_record(Record(point.server, point.workload.name, point.connections, point.repeat,
                                 status="unsupported", failure=reason, started_at=now(),
                                 rate_asked=point.rate and str(point.rate)))
                continue
            record = attempt(point, 1)
            for number in range(2, config.remeasure + 2):  # bounded: a loaded host cannot make it loop
                if record.status != "ok" or not (why := flags.needs_remeasure(record)):
                    break
                on_record(record)  # the flagged attempt is kept, as it was
                again = attempt(point, number)
                replaced, kept = (record, again) if again.status == "ok" else (again, record)
                replaced.superseded_by = {"repeat": point.repeat, "attempt": kept.attempt}
                flags.add_flags(again, {"remeasured": f"attempt {number}, after attempt {record.attempt} was "
                                                      f"flagged {', '.join(why)}"})
                record = again
            on_record(record)
    finally:
        if session is not None:
            session.stop()
    return not isinstance(broken, PointUnsupported)


def profile_point(runner: Runner, net: Network, config: SweepConfig, point: Point,
                  profiling: ProfilePlan, clock: WrkClock | None = None) -> ServerProfile:
    """One wrk run, not recorded, against the point's server restarted profiled: syscalls counted, then sampled."""
    profile = ServerProfile(point.server, point.workload.name, point.connections, "failed", "", "none")
    try:
        with ServerSession(runner, net, config, point, profiled=True) as session:
            # perf samples on-CPU, then records off-CPU, each for duration_s.
            load_s = math.ceil(PROFILE_LEAD_S + profiling.syscall_window_s + 2 * profiling.duration_s
                               + PROFILE_TAIL_S)
            with ThreadPoolExecutor(max_workers=1) as pool:
                load = pool.submit(run_wrk, runner, net, config, point, session.port, load_s, clock)
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


