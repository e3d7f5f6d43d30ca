"""One run from start to finish: checks, its directory, results saved after every point, signals, outputs.

The command line (bench/cli.py) turns arguments into a SweepConfig and a runner;
bench/console.py calls `execute` and shows what it is told through `RunEvents`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import environment
from bench.analysis.report import write_outputs
from bench.config import SweepConfig, plan
from bench.errors import BenchError
from bench.network import Namespaces
from bench.results import WRK_DIR, Profiling, Record, Run, ServerProfile, save
from bench.runners import Runner
from bench.sweep import SYSCALL_WINDOW_S, ProfilePlan, check_subject, now, run_sweep
from netns import ns
from netns.config import Topology
from netns.topology import status
from servers.base import raise_open_file_limit

TOPOLOGY_FIX = ("run: sudo python3 netns/setup.py up "
                "(or, without pyroute2 on the host: docker compose run --rm netns up)")
MAIN_PID = os.getpid()


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. A KeyboardInterrupt, so that neither `except Exception` nor
    asyncio's callback runner (inside pyroute2) swallows it: both let it through."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class SignalStop:
    """Turns the first SIGINT/SIGTERM into Interrupted in bench's own process.

    Python drops an exception raised inside some callbacks (the at-fork hooks
    that run around every ns.popen), so the signal is also remembered and
    `check()` raises it again after the point in progress.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.handle)

    def handle(self, signum: int, _frame: object) -> None:
        if os.getpid() != MAIN_PID:
            # A child forked by a library (pyroute2's NetNS does) inherited this handler:
            # it must simply die, not unwind into the sweep and stop our processes.
            os._exit(128 + signum)
        if self.signum is None:  # a second Ctrl-C must not cut the cleanup short
            self.signum = signum
            raise Interrupted(signum)

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)


@dataclass(frozen=True)
class RunEvents:
    """What the caller is told while the run goes on."""

    on_start: Callable[[Run, int], None]  # the run saved, and how many points it plans
    on_record: Callable[[Record], None]  # a point done (saved already)
    on_profile: Callable[[ServerProfile], None]  # a profiled run done (saved already)


def check_topology(topo: Topology) -> None:
    missing = [name for name in (topo.server_ns, topo.client_ns) if not ns.exists(name)]
    if missing:
        raise BenchError(f"namespace(s) {', '.join(missing)} missing; {TOPOLOGY_FIX}")
    state = status(topo, probe=False)
    if not state.healthy:
        raise BenchError(f"topology broken ({'; '.join(state.problems)}); {TOPOLOGY_FIX}")


def require_root() -> None:
    if os.geteuid() != 0:
        raise BenchError("bench needs root (network namespaces, pinning): sudo python3 -m bench ...")


def execute(config: SweepConfig, runner: Runner, out: Path, flamegraphs: bool,
            diffs: list[list[str]], events: RunEvents) -> Run:
    """Run the sweep into `out` and draw its outputs. On SIGINT/SIGTERM: everything stopped, the records
    kept in a valid results.json marked interrupted, then Interrupted raised."""
    runner.check()
    net = runner.network()
    if isinstance(net, Namespaces):
        check_topology(net.topo)
    raise_open_file_limit()  # inherited by every server and wrk (the hard limit cannot be raised here)
    if (out / "results.json").exists():
        raise BenchError(f"{out} already holds a run; choose another --out")
    for subject in config.subjects:
        if subject.category == "user":  # ours are checked by their tests; a user's file before anything runs
            check_subject(runner, net, config, subject)  # the server stopped again, whatever it answered
    out.mkdir(parents=True, exist_ok=True)
    run = Run(name=out.name, status="running", started_at=now(),
              environment=environment.collect(runner, net), config=asdict(config))
    if flamegraphs:
        run.profiling = Profiling(config.duration_s, SYSCALL_WINDOW_S, diffs, problem=runner.perf_problem())
    save(out, run)
    events.on_start(run, len(plan(config)))
    stop = SignalStop()
    stop.install()

    def on_record(record: Record) -> None:
        run.records.append(record)
        save(out, run)
        events.on_record(record)
        stop.check()

    def on_profile(profile: ServerProfile) -> None:
        run.profiling.profiles.append(profile)
        save(out, run)
        events.on_profile(profile)
        stop.check()

    profiling = run.profiling
    profile_plan = (ProfilePlan(out, profiling.duration_s, profiling.syscall_window_s, on_profile)
                    if profiling and not profiling.problem else None)
    try:
        run_sweep(config, runner, net, on_record, profile_plan, out / WRK_DIR)
        run.status = "complete"
    finally:
        if run.status == "running":  # a signal, or a fatal error such as the topology removed mid-sweep
            run.status = "interrupted"
        run.finished_at = now()
        save(out, run)
    write_outputs(out)
    return run
