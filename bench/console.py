"""What the commands print: a sweep's progress and its point lines, `bench compare`'s table, paths as the
user can open them. The command line (bench/cli.py) parses and calls these; nothing here parses arguments."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bench import subjects
from bench.analysis.compare import agreement_lines, comparison_table
from bench.analysis.index import write_index
from bench.config import SweepConfig
from bench.lifecycle import Interrupted, RunEvents, execute
from bench.results import JSON_NAME, Record, Run, ServerProfile, load
from bench.runners import REPO_ROOT, Runner
from bench.sweep import estimated_wall_s

HOST_RESULTS_ENV = "SWISSKNIFE_HOST_RESULTS"  # the compose bench: how the host names its results directory
RESULTS_DIR = REPO_ROOT / "results"
console = Console()


def shown(path: Path) -> str:
    """`path` as the user can open it: inside the compose bench container, the host's path."""
    host = os.environ.get(HOST_RESULTS_ENV)
    if host and path.resolve().is_relative_to(RESULTS_DIR):
        return f"{host.rstrip('/')}/{path.resolve().relative_to(RESULTS_DIR)}"  # keeps "./results/..." as typed
    return str(path)


def point_line(record: Record) -> str:
    where = f"{record.workload} {record.server:<10} {record.connections:>5} conn. #{record.repeat}"
    if record.status != "ok":
        mark = "[yellow]UNSUPPORTED[/yellow]" if record.status == "unsupported" else "[red]FAILED[/red]"
        return f"{where}  {mark} {record.failure}"
    # Figures a run over several machines does not measure are None: their flags stay off.
    engine_share, other_share = record.engine_cpu_share or 0, record.other_cpu_share or 0
    flags = [f for f, on in (("client-bound", record.client_bound),
                             (f"wrk-errors:{record.wrk_errors}", record.wrk_errors),
                             (f"disturbed:{other_share:.2f}cpu", record.disturbed),
                             (f"engine:{engine_share:.2f}cpu", engine_share >= 0.01),
                             ("veth-mismatch", record.veth_consistent is False)) if on]
    p99 = f"{record.latency_p99_us / 1000:7.2f} ms" if record.latency_p99_us else "      — ms"
    return (f"{where}  {record.requests_per_s:>10,.0f} req/s  p99 {p99}  "
            f"CPU {record.cpu_us_per_request:6.1f} µs/req  {' '.join(flags)}")


def profile_line(profile: ServerProfile) -> str:
    where = f"profile {profile.workload} {profile.server:<10} {profile.connections:>5} conn."
    if profile.status != "ok":
        return f"{where}  [red]NO PROFILE[/red] ({profile.status}) {profile.message}"
    per_request = (f"{profile.syscalls_per_request:.2f} syscalls/req" if profile.syscalls_per_request is not None
                   else f"syscalls not counted: {profile.syscalls_message}")
    return f"{where}  Python frames: {profile.python_method}  {per_request}  {profile.svg}"


def run_shown(config: SweepConfig, runner: Runner, out: Path, flamegraphs: bool, diffs: list[list[str]]) -> int:
    """One run into `out` under a progress bar, a line per point; its exit status (1: some points failed)."""
    started = time.monotonic()
    with Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("sweep", total=None)

        def on_start(run: Run, points: int) -> None:
            if run.profiling and run.profiling.problem:
                progress.console.print(f"no profiles: {run.profiling.problem}", highlight=False)
            progress.console.print(f"{points} points, {len(config.servers)} servers, about "
                                   f"{estimated_wall_s(config) / 60:.1f} min estimated, results in {shown(out)}",
                                   highlight=False, soft_wrap=True)
            progress.update(task, total=points)

        def on_record(record: Record) -> None:
            progress.console.print(point_line(record), highlight=False, soft_wrap=True)
            progress.advance(task)

        def on_profile(profile: ServerProfile) -> None:
            progress.console.print(profile_line(profile), highlight=False, soft_wrap=True)

        try:
            run = execute(config, runner, out, flamegraphs, diffs, RunEvents(on_start, on_record, on_profile))
        except Interrupted as interrupted:
            progress.console.print(f"{interrupted}: sweep stopped, records kept in {shown(out)} "
                                   f"(redraw: python3 -m bench plot {shown(out)})", highlight=False, soft_wrap=True)
            return interrupted.exit_code
        finally:
            if out.resolve().is_relative_to(RESULTS_DIR) and (out / JSON_NAME).exists():
                write_index(RESULTS_DIR)  # the list of runs includes this one, finished or not
    failed = sum(r.status == "failed" for r in run.records)
    unsupported = sum(r.status == "unsupported" for r in run.records)
    console.print(f"done in {time.monotonic() - started:.0f} s: {len(run.records) - failed - unsupported} ok, "
                  f"{failed} failed, {unsupported} unsupported by their model; report: {shown(out / 'report.html')}",
                  highlight=False, soft_wrap=True)
    return 1 if failed else 0


def print_paths(paths: list[Path]) -> None:
    for path in paths:
        console.print(shown(path), highlight=False, soft_wrap=True)


def print_comparison(a: Path, b: Path) -> None:
    """The medians of two runs side by side with their ratios B/A, then how far B reproduces A."""
    run_a, run_b = load(a), load(b)
    found = comparison_table(run_a, run_b)
    table = Table(title=f"medians of A = {a} and B = {b}")
    for index, heading in enumerate(found.columns):
        table.add_column(heading, justify="right" if found.aligned(index) == "r" else "left")
    for row in found.rows:
        table.add_row(*(entry.text for entry in row))
    # Pipes get rich's default 80 columns, too few for this table.
    wide = Console(width=None if console.is_terminal else 160)
    wide.print(table)
    for line in agreement_lines(run_a, run_b):
        wide.print(line, highlight=False, soft_wrap=True, markup=False)  # "[min–max]" is no style tag


def print_subjects(known: list[subjects.Subject]) -> None:
    """`--list-subjects`: a row per subject, its limits in words."""
    table = Table(title="subjects (python3 -m bench --servers NAME ...)")
    for heading in ("name", "category", "I/O model", "routes", "limits"):
        table.add_column(heading)
    for s in known:
        limits = [*([f"FD_SETSIZE {s.limits.fd_setsize}"] if s.limits.fd_setsize else []),
                  "worker processes as needed" if s.limits.processes == "workers" else "one process",
                  *(["a thread per connection"] if s.limits.thread_per_connection else []),
                  *(["kept-alive only"] if s.keep_alive_only else [])]
        table.add_row(s.name, s.category, s.model, " ".join(s.routes), ", ".join(limits))
    Console(width=None if console.is_terminal else 200).print(table)
