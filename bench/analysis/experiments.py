"""Experiment sections of a run's report: plots against the experiment's axis and a paragraph
generated from the numbers (pure: the run's records in, sections and plots out)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from bench import subjects
from bench.analysis import plots
from bench.analysis.document import Bullets, Entry, Figure, Section, Table, Text
from bench.analysis.metrics import Metric, figures, tabled
from bench.analysis.summary import Cell, median, summarize
from bench.analysis.tables import table
from bench.config import EXPERIMENTS, Experiment
from bench.profiling.breakdown import heaviest_lock_path
from bench.results import Run

AXIS_LABELS = {"idle": "idle connections", "pipeline": "pipeline depth", "connections": "connections"}
FLAT_SHARE = 0.8  # a model that kept this share of its throughput along the axis "stayed flat"


def members(experiment: Experiment, workloads: list[dict]) -> list[dict]:
    """The run's workloads (config records) that belong to the experiment, in run order."""
    return [w for w in workloads if experiment.includes(w["name"])]


def axis_points(experiment: Experiment, workloads: list[dict], cells: list[Cell]) -> list[Cell]:
    """Cells re-keyed so that `connections` holds the experiment's axis value (one connection count)."""
    names = {w["name"]: w for w in members(experiment, workloads)}
    mine = [c for c in cells if c.workload in names]
    if not mine:
        return []
    at = max(c.connections for c in mine)  # one curve per server: the members share their active set
    return [replace(c, connections=names[c.workload][experiment.axis]) for c in mine if c.connections == at]


def shown(workloads: list[dict], cells: list[Cell]) -> list[Experiment]:
    """Experiments the run has enough of: a measured member, and two axis values where the axis is its own.
    One compared across runs (gil: `bench gil`) has its section in their comparison, never in one run's."""
    measured = {c.workload for c in cells}
    return [e for e in EXPERIMENTS.values() if not e.across_runs and
            any(w["name"] in measured for w in members(e, workloads)) and
            (e.axis == "connections" or len({c.connections for c in axis_points(e, workloads, cells)}) > 1)]


def measured(metrics: list[Metric], points: list[Cell]) -> bool:
    return any(c.stats[m.key] is not None for c in points for m in metrics)


def drawn_figures(experiment: Experiment, points: list[Cell]) -> dict[str, list[Metric]]:
    """The experiment's figures that have something to draw (older runs lack the newer metrics)."""
    return {name: panels for name, panels in figures(experiment.name).items() if measured(panels, points)}


def draw(workloads: list[dict], cells: list[Cell], directory: Path) -> list[Path]:
    """One figure set per shown experiment whose axis is not the connection count."""
    paths = []
    for experiment in shown(workloads, cells):
        if experiment.axis == "connections":
            continue
        points = axis_points(experiment, workloads, cells)
        for figure, panels in drawn_figures(experiment, points).items():
            path = plots.figure_path(directory, experiment.name, figure)
            plots.draw(experiment.name, points, panels, path, x_label=AXIS_LABELS[experiment.axis])
            paths.append(path)
    return paths


def sections(workloads: list[dict], cells: list[Cell], plot_dir: Path, report_dir: Path) -> list[Section]:
    found = []
    for experiment in shown(workloads, cells):
        section = Section(f"Experiment: {experiment.name}", [Text(f"*{experiment.question}*")])
        if experiment.axis == "connections":
            section.blocks += [Text(paragraph_by_workload(w["name"], mine))  # an interrupted run lacks some
                               for w in members(experiment, workloads)
                               if (mine := [c for c in cells if c.workload == w["name"]])]
        else:
            points = axis_points(experiment, workloads, cells)
            section.blocks.append(Text(paragraph_along_axis(experiment, points)))
            if costs := paragraph_of_idle_costs(experiment, points):
                section.blocks.append(Text(costs))
            heading = f"{{:,}} {AXIS_LABELS[experiment.axis]}".format
            section.blocks += [table(points, metric.key, heading, metric.table)
                               for metric in tabled(experiment.name) if measured([metric], points)]
            for figure in drawn_figures(experiment, points):
                path = plots.figure_path(plot_dir, experiment.name, figure).relative_to(report_dir)
                section.blocks.append(Figure(f"{experiment.name} {figure}", path.as_posix()))
        found.append(section)
    return found


def rps(cell: Cell) -> float | None:
    return median(cell, "requests_per_s")


def paragraph_by_workload(workload: str, cells: list[Cell]) -> str:
    """Every model ranked by throughput at the largest connection count, with ratios to the best."""
    at = max(c.connections for c in cells)
    here = [c for c in cells if c.connections == at]
    measured = sorted((c for c in here if rps(c) is not None), key=rps, reverse=True)
    broken = [c for c in here if rps(c) is None]
    if not measured:
        return f"**{workload}** at {at} connections: no model produced a measurement."
    best = rps(measured[0])
    ranking = ", ".join(f"{c.server} {rps(c):,.0f} ({rps(c) / best:.2f}×, {median(c, 'cpu_us_per_request'):,.0f} "
                        f"µs CPU/req)" for c in measured)
    text = f"**{workload}** at {at} connections, requests/s (share of the best, server CPU per request): {ranking}."
    text += "".join(f" {c.server} {'is unsupported' if c.unsupported else 'failed'}: {c.failure}." for c in broken)
    return text


def paragraph_along_axis(experiment: Experiment, points: list[Cell]) -> str:
    """How each model's throughput and CPU per request change from the axis' first value to its last."""
    label = AXIS_LABELS[experiment.axis]
    low, high = min(c.connections for c in points), max(c.connections for c in points)
    changes, breaks = [], []
    for server in dict.fromkeys(c.server for c in points):
        mine = sorted((c for c in points if c.server == server), key=lambda c: c.connections)
        measured = [c for c in mine if rps(c) is not None]
        if first_break := next((c for c in mine if rps(c) is None), None):
            reason = "unsupported" if first_break.unsupported else "failed"
            breaks.append(f"{server} {reason} from {first_break.connections:,} {label} ({first_break.failure})")
        if len(measured) < 2:
            continue
        first, last = measured[0], measured[-1]
        changes.append((rps(last) / rps(first), server, first, last))
    changes.sort(reverse=True)
    flat = [f"{server} to {last.connections:,}" for ratio, server, _, last in
            sorted(changes, key=lambda change: (-change[3].connections, change[1])) if ratio >= FLAT_SHARE]
    parts = [f"{server}{' (reference)' if subjects.category(server) == 'reference' else ''} "
             f"{f'kept {ratio:.0%} of its throughput' if ratio < 1 else f'multiplied its throughput by {ratio:.2f}'} "
             f"({rps(first):,.0f} → {rps(last):,.0f} requests/s at {first.connections:,} → {last.connections:,}; "
             f"CPU {median(first, 'cpu_us_per_request'):,.1f} → {median(last, 'cpu_us_per_request'):,.1f} µs/request)"
             for ratio, server, first, last in changes]
    text = f"From {low:,} to {high:,} {label}: " + ("; ".join(parts) if parts else "too few points to compare") + "."
    if flat:
        text += (f" Flat (at least {FLAT_SHARE:.0%} of the throughput kept) up to the most {label} each was run "
                 f"with: {', '.join(flat)}.")
    if breaks:
        text += " Where a model breaks: " + "; ".join(breaks) + "."
    return text


# --- gil: several runs compared (python3 -m bench gil) ----------------------------------------------


LOCK_PATH_SHOWN = 5.0  # percent of a run's samples: a lock path below this is not worth naming


@dataclass(frozen=True)
class GilFigures:
    """One (workload, server) of one run, at the run's largest connection count."""

    requests_per_s: float | None
    cpu_us_per_request: float | None
    syscalls_per_request: float | None  # from the profiled run
    lock_share: float | None  # percent of the profiled run's CPU samples in threads, locks and the GIL
    failure: str | None  # why there is no measurement
    lock_path: tuple[str, float] | None = None  # the heaviest path to a lock, and its percent of the samples


@dataclass(frozen=True)
class GilRun:
    """A run of the gil experiment, keyed by what it varies: the interpreter's GIL and the server's CPUs."""

    gil: bool
    cpus: int
    connections: int
    version: str
    figures: dict[tuple[str, str], GilFigures]  # (workload, server) ->

    @property
    def label(self) -> str:
        return f"{'GIL' if self.gil else 'no GIL'}, {self.cpus} CPU{'s' if self.cpus > 1 else ''}"


def gil_run(run: Run, run_dir: Path) -> GilRun | None:
    """The run's gil figures; None when it is not one of `bench gil`'s runs (its preset) or lacks what they hold."""
    server_python = run.environment.get("server_python")
    gil = EXPERIMENTS["gil"]
    cells = [c for c in summarize(run.records) if gil.includes(c.workload)]
    if run.config["preset"] != gil.name or server_python is None or not cells:
        return None
    at = max(c.connections for c in cells)
    profiling = run.profiling
    profiles = {(p.workload, p.server): p for p in profiling.profiles} if profiling else {}
    locks = {(workload, server): found.shares()["locks"]
             for workload in dict.fromkeys(c.workload for c in cells) if profiling
             for server, found in plots.breakdowns(profiling, run_dir, workload).items()}
    figures = {}
    for cell in cells:
        if cell.connections != at:
            continue
        profile = profiles.get((cell.workload, cell.server))
        figures[cell.workload, cell.server] = GilFigures(
            rps(cell), median(cell, "cpu_us_per_request"), profile.syscalls_per_request if profile else None,
            locks.get((cell.workload, cell.server)), cell.failure,
            heaviest_lock_path(run_dir / profile.folded) if profile and profile.folded else None)
    return GilRun(server_python["gil_enabled"], len(run.config["server_cpus"]), at, server_python["version"],
                  figures)


def _value(value: float | None, form: str) -> str:
    return "—" if value is None else format(value, form)


def _change(before: float | None, after: float | None, form: str, unit: str) -> str:
    return f"{_value(before, form)} → {_value(after, form)}{unit}"


def gil_table(runs: list[GilRun], workload: str) -> Table:
    rows = []
    servers = dict.fromkeys(server for run in runs for (w, server) in run.figures if w == workload)
    for server in servers:
        for run in runs:
            found = run.figures.get((workload, server))
            if found is None:
                continue
            if found.requests_per_s is None:
                rows.append([Entry(server), Entry(run.label), Entry(found.failure or ""), *(Entry("") for _ in "123")])
                continue
            rows.append([Entry(server), Entry(run.label),
                         *(Entry(_value(value, form), value) for value, form in (
                             (found.requests_per_s, ",.0f"), (found.cpu_us_per_request, ".1f"),
                             (found.syscalls_per_request, ".2f"), (found.lock_share, ".1f")))])
    return Table(["server", "run", "requests/s", "CPU µs/request", "syscalls/request", "locks, % of samples"], rows,
                 align="llrrrr")


def gil_paragraph(runs: list[GilRun], workload: str, server: str) -> str:
    """What removing the GIL changes for one model on one workload, per CPU count, from the numbers."""
    by_key = {(run.gil, run.cpus): run.figures.get((workload, server)) for run in runs}
    parts = []
    for cpus in sorted({run.cpus for run in runs}):
        with_gil, without = by_key.get((True, cpus)), by_key.get((False, cpus))
        where = f"on {cpus} CPU{'s' if cpus > 1 else ''}"
        if with_gil is None or without is None:
            continue
        if with_gil.requests_per_s is None or without.requests_per_s is None:
            broken = with_gil if with_gil.requests_per_s is None else without
            parts.append(f"{where} no comparison ({broken.failure})")
            continue
        parts.append(
            f"{where} ×{without.requests_per_s / with_gil.requests_per_s:.2f} the throughput "
            f"({_change(with_gil.requests_per_s, without.requests_per_s, ',.0f', ' requests/s')}), CPU "
            f"{_change(with_gil.cpu_us_per_request, without.cpu_us_per_request, ',.1f', ' µs/request')}, "
            f"{_change(with_gil.syscalls_per_request, without.syscalls_per_request, '.2f', ' syscalls/request')}, "
            f"locks {_change(with_gil.lock_share, without.lock_share, '.1f', ' % of samples')}")
    text = f"**{server}** without the GIL: " + ("; ".join(parts) if parts else "no runs to compare") + "."
    cpu_counts = sorted({run.cpus for run in runs})
    if len(cpu_counts) > 1:
        low, high = cpu_counts[0], cpu_counts[-1]
        gains = []
        for gil, name in ((True, "with the GIL"), (False, "without")):
            one, more = by_key.get((gil, low)), by_key.get((gil, high))
            if one and more and one.requests_per_s and more.requests_per_s:
                gains.append(f"×{more.requests_per_s / one.requests_per_s:.2f} {name}")
        if gains:
            text += f" Going from {low} to {high} CPUs multiplies its throughput by {' and '.join(gains)}."
    return text


def gil_sections(runs: list[GilRun]) -> tuple[list[Text], list[Section]]:
    """The gil experiment across runs: what the runs are, then per workload a table and a paragraph per model."""
    gil = EXPERIMENTS["gil"]
    runs = sorted(runs, key=lambda run: (run.cpus, not run.gil))
    intro = [Text(f"*{gil.question}.*")]
    if versions := sorted({run.version for run in runs}):
        same = "the same version" if len(versions) == 1 else "DIFFERENT versions"
        intro.append(Text(f"Interpreters: CPython {' and '.join(versions)} ({same}); runs: "
                          f"{'; '.join(run.label for run in runs)}."))
    if not {run.gil for run in runs} >= {True, False}:
        intro.append(Text("These runs have only one interpreter: the comparison needs runs with and without the GIL "
                          "(`python3 -m bench gil`)."))
    found = []
    for workload in dict.fromkeys(w for run in runs for (w, _) in run.figures):
        connections = max(run.connections for run in runs)
        servers = dict.fromkeys(s for run in runs for (w, s) in run.figures if w == workload
                                and subjects.category(s) != "reference")
        paths = [f"{server}, {run.label}: {share:.1f} % of samples in `{path}`" for server in servers
                 for run in runs if (figures := run.figures.get((workload, server))) and figures.lock_path
                 for path, share in [figures.lock_path] if share >= LOCK_PATH_SHOWN]
        lock_blocks = [Text("Where the lock time goes (the heaviest path from a Python function to a lock, "
                            f"where it holds {LOCK_PATH_SHOWN:g} % of the samples or more):"),
                       Bullets(paths)] if paths else []
        found.append(Section(f"gil: {workload} at {connections} connections", [
            gil_table(runs, workload), *(Text(gil_paragraph(runs, workload, server)) for server in servers),
            *lock_blocks]))
    return intro, found


def paragraph_of_idle_costs(experiment: Experiment, points: list[Cell]) -> str | None:
    """What an idle connection cost each model (memory, here and on the client side; the time to open
    them), at the most it held; None for other experiments and for runs that did not measure it."""
    if not measured(tabled(experiment.name), points):
        return None
    label = AXIS_LABELS[experiment.axis]
    tops = []
    for server in dict.fromkeys(c.server for c in points):
        served = [c for c in points if c.server == server and median(c, "idle_server_kib_per_connection") is not None]
        if served:
            tops.append(max(served, key=lambda c: c.connections))
    if not tops:
        return None
    tops.sort(key=lambda c: median(c, "idle_server_kib_per_connection"))
    text = (f"What one of the {label} costs, at the most each model held (resident set growth of all the server's "
            f"processes while they were opened, over their number): " +
            ", ".join(f"{c.server} {median(c, 'idle_server_kib_per_connection'):,.2f} KiB at {c.connections:,}"
                      for c in tops) + ".")
    for key, what in (("idle_holder_kib_per_connection", "the holders on the client side"),
                      ("idle_kernel_kib_per_connection", "the kernel (slab and TCP buffers for both ends, "
                                                         "machine-wide)")):
        values = [v for c in tops if (v := median(c, key)) is not None]
        if values:
            text += f" Beside that, {what}: {min(values):,.2f}–{max(values):,.2f} KiB per connection."
    most = max(c.connections for c in tops)
    opened = [f"{c.server} {median(c, 'idle_open_s'):,.1f} s" for c in tops
              if c.connections == most and median(c, "idle_open_s") is not None]
    if opened:
        text += f" Opening {most:,} until the server had accepted them all took {', '.join(opened)}."
    return text
