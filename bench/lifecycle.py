"""One run from start to finish: checks, its directory, results saved after every point, signals, outputs.

The command line (bench/cli.py) turns arguments into a SweepConfig and a runner;
bench/console.py calls `execute` and shows what it is told through `RunEvents`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from bench import environment, flags, subjects
from bench.analysis.report import write_outputs
from bench.config import DEFAULT_RATES, Rate, SweepConfig, Workload, plan
from bench.errors import BenchError
from bench.network import Namespaces, Network
from bench.records import now
from bench.results import JSON_NAME, WRK_DIR, Profiling, Record, Run, ServerProfile, load, save
from bench.runners import Runner
from bench.session import check_subject
from bench.sweep import SYSCALL_WINDOW_S, ProfilePlan, Progress, run_sweep
from netns import ns
from netns.config import Topology
from netns.topology import status
from servers.base import raise_open_file_limit

TOPOLOGY_FIX = ("run: sudo python3 netns/setup.py up "
                "(or, without pyroute2 on the host: docker compose run --rm netns up)")
MAIN_PID = os.getpid()
# What `bench resume` compares with the environment the run started in: the code and the machine.
RESUME_CHECKED = ("git_commit", "kernel", "os", "cpu_model", "cpus", "runner", "tools", "server_python", "image")


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


def prepare(runner: Runner) -> Network:
    """The checks every run and resumed run passes before anything starts."""
    runner.check()
    net = runner.network()
    if isinstance(net, Namespaces):
        check_topology(net.topo)
    raise_open_file_limit()  # inherited by every server and wrk (the hard limit cannot be raised here)
    return net


def plan_digest(config: SweepConfig) -> str:
    """The planned points and their workloads, in run order, as one short digest."""
    points = [[p.server, p.workload.name, p.connections, p.repeat, *([str(p.rate)] if p.rate else [])]
              for p in plan(config)]
    text = json.dumps([[asdict(w) for w in config.workloads], points])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def execute(config: SweepConfig, runner: Runner, out: Path, flamegraphs: bool,
            diffs: list[list[str]], events: RunEvents) -> Run:
    """Run the sweep into `out` and draw its outputs. On SIGINT/SIGTERM: everything stopped, the records
    kept in a valid results.json marked interrupted, then Interrupted raised."""
    net = prepare(runner)
    if (out / JSON_NAME).exists():
        raise BenchError(f"{out} already holds a run; choose another --out (or: python3 -m bench resume {out})")
    for subject in config.subjects:
        if subject.category == "user":  # ours are checked by their tests; a user's file before anything runs
            check_subject(runner, net, config, subject)  # the server stopped again, whatever it answered
    out.mkdir(parents=True, exist_ok=True)
    run = Run(name=out.name, status="running", started_at=now(),
              environment=environment.collect(runner, net), config=asdict(config), plan_digest=plan_digest(config))
    if flamegraphs:
        run.profiling = Profiling(config.duration_s, SYSCALL_WINDOW_S, diffs, problem=runner.perf_problem())
    keep(out, run)
    return sweep(run, config, runner, net, out, events, Progress())


def stored_config(document: dict) -> SweepConfig:
    """The SweepConfig a results.json was made with; its subjects registered as described (a user's, too)."""
    described = []
    for found in document["subjects"]:
        known = subjects.REGISTRY.subjects.get(found["name"])
        if known is None:  # a user's subject: its description is all we need to start it again
            known = subjects.REGISTRY.add(subjects.from_document(found, Path(found["directory"])))
        described.append(known)
    tuples = {"servers", "connections", "server_cpus", "client_engines"}
    values = {f.name: document[f.name] for f in fields(SweepConfig) if f.name in document}
    return SweepConfig(**values | {key: tuple(values[key]) for key in tuples if key in values} | {
        "workloads": tuple(Workload(**w | {"connections": w["connections"] and tuple(w["connections"])}
                                    | {"mix": tuple(tuple(m) for m in w.get("mix", ()))})
                           for w in document["workloads"]),
        "rates": tuple(Rate(**r) for r in document["rates"]) if "rates" in document else DEFAULT_RATES,
        "subjects": tuple(described)})


def differences(run: Run, config: SweepConfig, found: dict) -> list[str]:
    """What differs between the run as it started and a resume of it: the plan, the code, the machine."""
    lines = []
    if run.plan_digest != plan_digest(config):
        lines.append(f"the plan differs (digest {run.plan_digest} then, {plan_digest(config)} now)")
    if json.loads(json.dumps([asdict(s) for s in config.subjects])) != json.loads(json.dumps(run.config["subjects"])):
        lines.append("a subject's description differs")
    lines += [f"{key} was {run.environment.get(key)!r}, now {found.get(key)!r}"
              for key in RESUME_CHECKED if run.environment.get(key) != found.get(key)]
    return lines


def resume(out: Path, runner_for: Callable[[SweepConfig], Runner], force: bool) -> Callable[[RunEvents], Run]:
    """Check that the interrupted or killed run in `out` can go on, then return what goes on with it: the points
    recorded are skipped, the rest measured into the same results.json. BenchError with one line, before anything
    is written, when the plan, code or machine differ (unless `force`, which is recorded in run.resumed)."""
    run = load(out)
    if run.status == "complete":
        raise BenchError(f"{out} holds a complete run: nothing to resume")
    config = stored_config(run.config)
    runner = runner_for(config)
    net = prepare(runner)
    found = differences(run, config, environment.collect(runner, net))
    if found and not force:
        raise BenchError(f"cannot resume {out}: {'; '.join(found)} (--force resumes anyway and records it)")
    progress = Progress({r.key for r in run.records},
                        {(p.server, p.workload) for p in run.profiling.profiles} if run.profiling else set())

    def start(events: RunEvents) -> Run:
        run.resumed.append({"at": now(), "forced": bool(found), "differences": found,
                            "skipped": len(progress.done)})
        run.status, run.finished_at = "running", None
        keep(out, run)
        return sweep(run, config, runner, net, out, events, progress)

    return start


def keep(out: Path, run: Run) -> None:
    """Save the run; a disk that refuses stops it with one line (the file on disk is the last good copy)."""
    try:
        save(out, run)
    except OSError as error:
        raise BenchError(f"cannot save {out / JSON_NAME} ({error.strerror or error}): the run stops; the file "
                         f"holds the last good copy (python3 -m bench resume {out} when there is room)") from None


def sweep(run: Run, config: SweepConfig, runner: Runner, net: Network, out: Path, events: RunEvents,
          progress: Progress) -> Run:
    events.on_start(run, len(plan(config)) - len(progress.done))
    stop = SignalStop()
    stop.install()

    def on_record(record: Record) -> None:
        run.records.append(record)
        flags.mark_outliers(run.records)
        keep(out, run)
        events.on_record(record)
        stop.check()

    def on_profile(profile: ServerProfile) -> None:
        run.profiling.profiles.append(profile)
        keep(out, run)
        events.on_profile(profile)
        stop.check()

    profiling = run.profiling
    profile_plan = (ProfilePlan(out, profiling.duration_s, profiling.syscall_window_s, on_profile)
                    if profiling and not profiling.problem else None)
    started = time.monotonic()
    try:
        run_sweep(config, runner, net, on_record, profile_plan, out / WRK_DIR, progress)
        run.status = "complete"
    finally:
        if run.status == "running":  # a signal, or a fatal error such as the topology removed mid-sweep
            run.status = "interrupted"
        run.finished_at = now()
        # A resumed run adds its own time: the share is the whole run's.
        before = run.efficiency or {"wall_s": 0.0, "wrk_s": 0.0}
        wall_s, wrk_s = before["wall_s"] + time.monotonic() - started, before["wrk_s"] + progress.clock.seconds
        run.efficiency = {"wall_s": wall_s, "wrk_s": wrk_s, "wrk_share": wrk_s / wall_s if wall_s else 0.0}
        keep(out, run)
    write_outputs(out)
    return run
