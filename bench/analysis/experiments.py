"""Experiment sections of report.md: plots against the experiment's axis and a paragraph
generated from the numbers (pure: the run's records in, text and PNGs out)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.analysis import plots
from bench.analysis.metrics import FIGURES
from bench.analysis.summary import Cell, median
from bench.config import EXPERIMENTS, REFERENCES, Experiment

AXIS_LABELS = {"idle": "idle connections", "pipeline": "pipeline depth", "connections": "connections"}


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
    """Experiments the run has enough of: a measured member, and two axis values where the axis is its own."""
    measured = {c.workload for c in cells}
    return [e for e in EXPERIMENTS.values()
            if any(w["name"] in measured for w in members(e, workloads)) and
            (e.axis == "connections" or len({c.connections for c in axis_points(e, workloads, cells)}) > 1)]


def draw(workloads: list[dict], cells: list[Cell], directory: Path) -> list[Path]:
    """One figure set per shown experiment whose axis is not the connection count."""
    paths = []
    for experiment in shown(workloads, cells):
        if experiment.axis == "connections":
            continue
        points = axis_points(experiment, workloads, cells)
        for figure, panels in FIGURES.items():
            path = plots.figure_path(directory, experiment.name, figure)
            plots.draw(experiment.name, points, panels, path, x_label=AXIS_LABELS[experiment.axis])
            paths.append(path)
    return paths


def sections(workloads: list[dict], cells: list[Cell], plot_dir: Path, report_dir: Path) -> list[str]:
    lines: list[str] = []
    for experiment in shown(workloads, cells):
        present = members(experiment, workloads)
        lines += [f"## Experiment: {experiment.name}", "", f"*{experiment.question}*", ""]
        if experiment.axis == "connections":
            lines += [paragraph_by_workload(w["name"], [c for c in cells if c.workload == w["name"]])
                      for w in present] + [""]
        else:
            points = axis_points(experiment, workloads, cells)
            lines += [paragraph_along_axis(experiment, points), ""]
            for figure in FIGURES:
                path = plots.figure_path(plot_dir, experiment.name, figure).relative_to(report_dir)
                lines += [f"![{experiment.name} {figure}]({path.as_posix()})", ""]
    return lines


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
    parts = [f"{server}{' (reference)' if server in REFERENCES else ''} "
             f"{f'kept {ratio:.0%} of its throughput' if ratio < 1 else f'multiplied its throughput by {ratio:.2f}'} "
             f"({rps(first):,.0f} → {rps(last):,.0f} requests/s at {first.connections:,} → {last.connections:,}; "
             f"CPU {median(first, 'cpu_us_per_request'):,.1f} → {median(last, 'cpu_us_per_request'):,.1f} µs/request)"
             for ratio, server, first, last in changes]
    text = f"From {low:,} to {high:,} {label}: " + ("; ".join(parts) if parts else "too few points to compare") + "."
    if breaks:
        text += " Where a model breaks: " + "; ".join(breaks) + "."
    return text
