"""python3 -m bench [options]      sweep servers x workloads x connection counts
python3 -m bench profile [opts]   flame graphs, where the time goes and syscalls/request (plaintext)
python3 -m bench plot DIR         redraw plots and report.md from DIR/results.json
python3 -m bench compare A B      per-point ratios B/A of two runs
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bench import experiments, environment, plots, report
from bench.compare import compare
from bench.config import (DEFAULT_PROFILE, EXPERIMENTS, PROFILES, REFERENCE_SERVER, WORKLOADS, SweepConfig, plan,
                          workload)
from bench.errors import BenchError
from bench.results import Profiling, Record, Run, ServerProfile, load, save, write_atomic
from bench.runners import REPO_ROOT, RUNNERS, ProcessRunner, Runner
from bench.summary import summarize
from bench.sweep import SYSCALL_WINDOW_S, ProfilePlan, now, run_sweep
from netns import ns
from netns.config import Topology
from netns.ns import NamespaceError
from netns.topology import TopologyError, status

# Differential flame graphs drawn when both servers were profiled and no --diff says otherwise.
DEFAULT_DIFFS = (("select", "epoll"), ("epoll", "epoll-pool"))
PROFILE_CONNECTIONS = 64
TOPOLOGY_FIX = "run: sudo python3 netns/setup.py up (or, without pyroute2 on the host: docker compose run --rm netns up)"
console = Console()
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


def server_kinds() -> list[str]:
    listed = subprocess.run([sys.executable, "-m", "servers", "--list"], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        raise BenchError(f"`python3 -m servers --list` failed: {listed.stderr.strip()}")
    return listed.stdout.split()


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def default_cpus() -> tuple[tuple[int, ...], int]:
    """The first two CPUs we may use; both sides share the only one on a 1-CPU host."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0],), allowed[1] if len(allowed) > 1 else allowed[0]


def parse_cpus(text: str) -> tuple[tuple[int, ...], int]:
    """SERVER,CLIENT where SERVER is a CPU or a range A-B: `0,1` or `0-3,4`."""
    server, _, client = text.partition(",")
    first, _, last = server.partition("-")
    server_cpus = tuple(range(int(first), int(last or first) + 1))
    if not server_cpus:
        raise ValueError(text)
    return server_cpus, int(client)


def server_pair(text: str) -> tuple[str, str]:
    before, comma, after = text.partition(",")
    if not (comma and before and after):
        raise argparse.ArgumentTypeError(f"takes two servers as A,B, not {text}")
    return before, after


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options the sweep and `profile` share."""
    parser.add_argument("--servers", nargs="+", metavar="KIND",
                        help=f"server kinds (python3 -m servers --list); {REFERENCE_SERVER} is always added")
    parser.add_argument("--duration", type=positive, metavar="S", help="seconds per measured run and of perf sampling")
    parser.add_argument("--out", type=Path, metavar="DIR", help="default: results/<timestamp>-<profile>")
    parser.add_argument("--runner", choices=RUNNERS, default="process")
    parser.add_argument("--cpus", metavar="SERVER,CLIENT",
                        help="CPUs to pin the server and wrk to; SERVER may be a range (0-1,1: the server on two "
                             "CPUs, so reuseport's processes can run in parallel)")
    parser.add_argument("--server-python", metavar="PATH",
                        help="interpreter of the Python servers (process runner; default: bench's own); "
                             "3.12+ puts Python functions in the flame graphs")
    parser.add_argument("--diff", nargs="+", type=server_pair, metavar="A,B",
                        help="differential flame graphs from A to B (default: "
                             f"{' and '.join(','.join(pair) for pair in DEFAULT_DIFFS)}, of those profiled)")


def sweep_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE)
    parser.add_argument("--workloads", nargs="+", metavar="NAME", help=f"from: {', '.join(WORKLOADS)}")
    parser.add_argument("--experiments", nargs="+", metavar="NAME",
                        help=f"run these experiments' workloads, from: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--connections", nargs="+", type=positive, metavar="N")
    parser.add_argument("--repeat", type=positive, metavar="N")
    parser.add_argument("--flamegraphs", action="store_true",
                        help="one extra, unrecorded run per server and workload at its largest connection count, "
                             "profiled with perf")
    add_run_options(parser)
    return parser


def profile_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench profile",
        description="Flame graphs of every server under plaintext load at one connection count (one measured "
                    "run each, then a profiled one), where the time goes, syscalls per request.")
    parser.add_argument("--connections", type=positive, default=PROFILE_CONNECTIONS, metavar="N")
    add_run_options(parser)
    return parser


def resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> SweepConfig:
    """The profile's values, overridden by the options given; bad names end in a usage error."""
    profile = PROFILES[args.profile]
    known = [*server_kinds(), REFERENCE_SERVER]
    servers = args.servers or profile.servers or known
    if unknown := [s for s in servers if s not in known]:
        parser.error(f"unknown server(s) {', '.join(unknown)}; choose from: {', '.join(known)}")
    if unknown := [e for e in args.experiments or () if e not in EXPERIMENTS]:
        parser.error(f"unknown experiment(s) {', '.join(unknown)}; choose from: {', '.join(EXPERIMENTS)}")
    from_experiments = [w for e in args.experiments or () for w in EXPERIMENTS[e].default_workloads()]
    workloads = list(dict.fromkeys([*(args.workloads or ()), *from_experiments])) or profile.workloads
    if unknown := [w for w in workloads if workload(w) is None]:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from: {', '.join(WORKLOADS)}")
    try:
        server_cpus, client_cpu = parse_cpus(args.cpus) if args.cpus else default_cpus()
    except ValueError:
        parser.error(f"--cpus takes SERVER,CLIENT CPU numbers (SERVER may be a range A-B), not {args.cpus!r}")
    if not {*server_cpus, client_cpu} <= os.sched_getaffinity(0):
        parser.error(f"--cpus: usable CPUs are {sorted(os.sched_getaffinity(0))}")
    return SweepConfig(
        profile=args.profile,
        servers=tuple(dict.fromkeys([*servers, REFERENCE_SERVER])),
        workloads=tuple(workload(w) for w in workloads),
        connections=tuple(args.connections or profile.connections),
        duration_s=args.duration or profile.duration_s,
        warmup_s=profile.warmup_s,
        repeat=args.repeat or profile.repeat,
        runner=args.runner,
        server_cpus=server_cpus,
        client_cpu=client_cpu,
    )


def check_topology(topo: Topology) -> None:
    missing = [name for name in (topo.server_ns, topo.client_ns) if not ns.exists(name)]
    if missing:
        raise BenchError(f"namespace(s) {', '.join(missing)} missing; {TOPOLOGY_FIX}")
    state = status(topo, probe=False)
    if not state.healthy:
        raise BenchError(f"topology broken ({'; '.join(state.problems)}); {TOPOLOGY_FIX}")


def raise_open_file_limit() -> None:
    """Soft to hard, inherited by every server and wrk (the hard limit cannot be raised here)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def point_line(record: Record) -> str:
    where = f"{record.workload} {record.server:<10} {record.connections:>5} conn. #{record.repeat}"
    if record.status != "ok":
        mark = "[yellow]UNSUPPORTED[/yellow]" if record.status == "unsupported" else "[red]FAILED[/red]"
        return f"{where}  {mark} {record.failure}"
    flags = [f for f, on in (("client-bound", record.client_bound),
                             (f"wrk-errors:{record.wrk_errors}", record.wrk_errors),
                             (f"disturbed:{record.other_cpu_share:.2f}cpu", record.disturbed),
                             ("veth-mismatch", not record.veth_consistent)) if on]
    p99 = f"{record.latency_p99_us / 1000:7.2f} ms" if record.latency_p99_us else "      — ms"
    return (f"{where}  {record.requests_per_s:>10,.0f} req/s  p99 {p99}  "
            f"CPU {record.cpu_us_per_request:6.1f} µs/req  {' '.join(flags)}")


def write_outputs(directory: Path) -> list[Path]:
    """Plots and report.md from results.json alone."""
    run = load(directory)
    cells = summarize(run.records)
    plot_dir = directory / "plots"
    paths = plots.draw_all(cells, plot_dir) + experiments.draw(run.config["workloads"], cells, plot_dir)
    if run.profiling:
        paths += plots.draw_profiles(run.profiling, directory, plot_dir)
    write_atomic(directory / "report.md", report.render(run, cells, plot_dir, directory))
    return [*paths, directory / "report.md"]


def profile_line(profile: ServerProfile) -> str:
    where = f"profile {profile.workload} {profile.server:<10} {profile.connections:>5} conn."
    if profile.status != "ok":
        return f"{where}  [red]NO PROFILE[/red] ({profile.status}) {profile.message}"
    per_request = (f"{profile.syscalls_per_request:.2f} syscalls/req" if profile.syscalls_per_request is not None
                   else f"syscalls not counted: {profile.syscalls_message}")
    return f"{where}  Python frames: {profile.python_method}  {per_request}  {profile.svg}"


def diff_pairs(args: argparse.Namespace, parser: argparse.ArgumentParser, config: SweepConfig) -> list[list[str]]:
    if args.diff and not args.flamegraphs:
        parser.error("--diff draws differential flame graphs: add --flamegraphs")
    if unknown := [s for pair in args.diff or () for s in pair if s not in config.servers]:
        parser.error(f"--diff: {', '.join(unknown)} not among the servers swept")
    return [list(pair) for pair in args.diff or DEFAULT_DIFFS if set(pair) <= set(config.servers)]


def make_runner(args: argparse.Namespace, parser: argparse.ArgumentParser, config: SweepConfig,
                topo: Topology) -> Runner:
    if not args.server_python:
        return RUNNERS[config.runner](topo, config.server_cpus, config.client_cpu)
    if config.runner != ProcessRunner.name:
        parser.error("--server-python is for the process runner: containers run the image's python3")
    return ProcessRunner(topo, config.server_cpus, config.client_cpu, args.server_python)


def sweep_command(argv: list[str]) -> int:
    parser = sweep_parser()
    args = parser.parse_args(argv)
    return run_command(args, parser, resolve(args, parser))


def profile_command(argv: list[str]) -> int:
    """A sweep of plaintext at one connection count, one repeat, with flame graphs."""
    parser = profile_parser()
    args = parser.parse_args(argv)
    args.profile, args.workloads, args.experiments = DEFAULT_PROFILE, ["plaintext"], None
    args.connections, args.repeat, args.flamegraphs = [args.connections], 1, True
    return run_command(args, parser, replace(resolve(args, parser), profile="profile"))


def run_command(args: argparse.Namespace, parser: argparse.ArgumentParser, config: SweepConfig) -> int:
    if os.geteuid() != 0:
        raise BenchError("bench needs root (network namespaces, pinning): sudo python3 -m bench ...")
    diffs = diff_pairs(args, parser, config)
    topo = Topology()
    runner = make_runner(args, parser, config, topo)
    runner.check()
    check_topology(topo)
    raise_open_file_limit()
    out = args.out or REPO_ROOT / "results" / f"{datetime.now():%Y%m%d-%H%M%S}-{config.profile}"
    out.mkdir(parents=True, exist_ok=True)
    if (out / "results.json").exists():
        raise BenchError(f"{out} already holds a run; choose another --out")
    run = Run(name=out.name, status="running", started_at=now(),
              environment=environment.collect(runner, topo), config=asdict(config))
    if args.flamegraphs:
        run.profiling = Profiling(config.duration_s, SYSCALL_WINDOW_S, diffs, problem=runner.perf_problem())
        if run.profiling.problem:
            console.print(f"no profiles: {run.profiling.problem}", highlight=False)
    save(out, run)
    points = plan(config)
    console.print(f"{len(points)} points, {len(config.servers)} servers, results in {out}")
    started = time.monotonic()
    stop = SignalStop()
    stop.install()
    try:
        with Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("sweep", total=len(points))

            def on_record(record: Record) -> None:
                run.records.append(record)
                save(out, run)
                progress.console.print(point_line(record), highlight=False, soft_wrap=True)
                progress.advance(task)
                stop.check()

            def on_profile(profile: ServerProfile) -> None:
                run.profiling.profiles.append(profile)
                save(out, run)
                progress.console.print(profile_line(profile), highlight=False, soft_wrap=True)
                stop.check()

            profiling = run.profiling
            profile_plan = (ProfilePlan(out, profiling.duration_s, profiling.syscall_window_s, on_profile)
                    if profiling and not profiling.problem else None)
            run_sweep(config, runner, topo, on_record, profile_plan)
        run.status = "complete"
    except Interrupted as interrupted:
        console.print(f"{interrupted}: sweep stopped, {len(run.records)} records kept in {out} "
                      f"(redraw: python3 -m bench plot {out})")
        return interrupted.exit_code
    finally:
        if run.status == "running":  # a signal, or a fatal error such as the topology removed mid-sweep
            run.status = "interrupted"
        run.finished_at = now()
        save(out, run)
    write_outputs(out)
    failed = sum(r.status == "failed" for r in run.records)
    unsupported = sum(r.status == "unsupported" for r in run.records)
    console.print(f"done in {time.monotonic() - started:.0f} s: {len(run.records) - failed - unsupported} ok, "
                  f"{failed} failed, {unsupported} unsupported by their model; report: {out / 'report.md'}")
    return 1 if failed else 0


def plot_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench plot", description="Redraw plots and report.md.")
    parser.add_argument("directory", type=Path)
    for path in write_outputs(parser.parse_args(argv).directory):
        console.print(str(path))
    return 0


def compare_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench compare", description="Per-point ratios B/A.")
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    rows = compare(summarize(load(args.a).records), summarize(load(args.b).records))
    if not rows:
        raise BenchError("the two runs share no (workload, server, connections) point")
    table = Table(title=f"medians of A = {args.a} and B = {args.b}")
    for heading in ("workload", "server", "conn."):
        table.add_column(heading)
    for heading in ("req/s A", "req/s B", *COMPARE_HEADINGS.values()):
        table.add_column(heading, justify="right")
    for row in rows:
        throughput = [f"{side['requests_per_s']:,.0f}" if side["requests_per_s"] else "failed"
                      for side in (row.a, row.b)]
        ratios = [f"{row.ratio[m]:.2f}" if row.ratio[m] is not None else "—" for m in COMPARE_HEADINGS]
        table.add_row(row.workload, row.server, str(row.connections), *throughput, *ratios)
    # Pipes get rich's default 80 columns, too few for this table.
    Console(width=None if console.is_terminal else 160).print(table)
    return 0


# summary.METRICS key -> column of its ratio B/A
COMPARE_HEADINGS = {"requests_per_s": "req/s B/A", "latency_p50_us": "p50 B/A", "latency_p99_us": "p99 B/A",
                    "cpu_us_per_request": "CPU/req B/A"}
COMMANDS = {"plot": plot_command, "compare": compare_command, "profile": profile_command}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = COMMANDS.get(argv[0]) if argv else None
    try:
        return command(argv[1:]) if command else sweep_command(argv)
    except TopologyError as error:
        print(f"bench: error: {error}; {TOPOLOGY_FIX}", file=sys.stderr)
        return 2
    except (BenchError, NamespaceError) as error:  # NamespaceError names the fix itself
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
