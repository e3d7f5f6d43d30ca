"""Charts of a run, one set per workload, each as a PNG (report.md) and an SVG (report.html) (pure: records in,
files out)."""

from __future__ import annotations

import json
from itertools import accumulate
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator

from bench import subjects
from bench.analysis.metrics import FIGURES, Metric
from bench.analysis.summary import Cell
from bench.errors import BenchError
from bench.profiling import Breakdown, breakdown, differential, plot_breakdown
from bench.profiling.flamegraph import RenderError
from bench.results import FLAMEGRAPH_DIR, WRK_DIR, Profiling, Record
from bench.wrk import Histogram, WrkReport, merge_histograms

# SVGs with text as text (small, searchable) and fixed ids: a redraw of the same run gives the same bytes.
matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "swissknife"})

# The references are dashed, in greys: the C server black, the Python floor grey.
# The references dashed in greys, the peers dotted: each group apart from the models, on the same axes.
REFERENCE_COLOURS = ("grey", "black", "dimgrey")
LINE_STYLES = {"reference": "--", "peer": ":"}


def figure_path(directory: Path, workload: str, figure: str) -> Path:
    return directory / f"{workload}-{figure}.png"


def draw_all(cells: list[Cell], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    workloads = dict.fromkeys(c.workload for c in cells)
    paths = []
    for workload in workloads:
        for figure, panels in FIGURES.items():
            path = figure_path(directory, workload, figure)
            draw(workload, [c for c in cells if c.workload == workload], panels, path)
            paths.append(path)
    return paths


def styles(servers: list[str]) -> dict[str, dict]:
    """Each server's line: the models solid, the references dashed in greys, the peers dotted with squares."""
    colours = dict(zip([s for s in servers if subjects.category(s) == "reference"], REFERENCE_COLOURS, strict=False))
    found = {}
    for server in servers:
        group = subjects.category(server)
        found[server] = {"label": f"{server} ({group})" if group in LINE_STYLES else server,
                         "linestyle": LINE_STYLES.get(group, "-"), "color": colours.get(server),
                         "marker": "s" if group == "peer" else "o"}
    return found


def draw(workload: str, cells: list[Cell], panels: list[Metric], path: Path,
         x_label: str = "connections") -> None:
    """`cells[i].connections` is the x value: the connection count, or an experiment's axis value."""
    servers = dict.fromkeys(c.server for c in cells)
    style = styles(list(servers))
    connections = sorted({c.connections for c in cells})
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], panels, strict=False):
        for server in servers:
            points = [(c.connections, c.stats[metric.key]) for c in cells
                      if c.server == server and c.stats[metric.key] is not None]
            if not points:
                continue
            x = [n for n, _ in points]
            medians = [s.median for _, s in points]
            errors = [[s.median - s.low for _, s in points], [s.high - s.median for _, s in points]]
            ax.errorbar(x, medians, yerr=errors, markersize=4, capsize=3, **style[server])
        if min(connections) > 0:
            ax.set_xscale("log", base=2)
        elif len(connections) > 2:  # 0 (the idle experiment's first point) has no log: linear up to the next
            ax.set_xscale("symlog", linthresh=connections[1], linscale=0.5)
            ax.xaxis.set_minor_locator(NullLocator())  # its minor ticks would crowd the values drawn
        ax.set_xticks(connections, [f"{n:,}" for n in connections])
        ax.set_xlabel(x_label)
        ax.set_ylabel(metric.label)
        if metric.log_y:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{workload}: {metric.label}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), title="server")
    save(fig, path)


def save(fig: plt.Figure, path: Path) -> None:
    """The PNG at `path` (report.md's) and the SVG beside it (report.html's)."""
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    fig.savefig(path.with_suffix(".svg"), bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)


def histograms(records: list[Record], run_dir: Path, workload: str) -> dict[str, Histogram]:
    """server -> wrk's latency histogram at its largest connection count, every client and repeat summed, where
    the run kept the clients' reports (several client engines: bench/sweep.py keep_reports); else empty."""
    mine = [r for r in records if r.workload == workload and r.status == "ok"]
    found = {}
    for server in dict.fromkeys(r.server for r in mine):
        most = max(r.connections for r in mine if r.server == server)
        paths = [path for r in mine if r.server == server and r.connections == most
                 for path in sorted((run_dir / WRK_DIR).glob(f"{workload}-{server}-c{most}-r{r.repeat}-client*.json"))]
        reports = [WrkReport(**{k: v for k, v in json.loads(path.read_text()).items() if k != "engine"})
                   for path in paths]
        if parts := [report.histogram for report in reports if report.histogram]:
            found[server] = merge_histograms(parts)
    return found


def draw_histograms(records: list[Record], run_dir: Path, plot_dir: Path) -> list[Path]:
    """Per workload with kept histograms: each server's share of responses answered within a latency."""
    paths = []
    for workload in dict.fromkeys(r.workload for r in records):
        if not (found := histograms(records, run_dir, workload)):
            continue
        plot_dir.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(8, 4.5))
        style = styles(list(found))
        for server, histogram in found.items():
            total = sum(count for _, count in histogram)
            shares = list(accumulate(count / total for _, count in histogram))
            ax.step([value for value, _ in histogram], shares, where="post",
                    **{key: value for key, value in style[server].items() if key != "marker"})
        ax.set_xscale("log")
        ax.set_xlabel("latency (µs)")
        ax.set_ylabel("share of responses within it")
        ax.set_ylim(0, 1)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{workload}: latency distribution (wrk's histograms, all clients and repeats)")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), title="server")
        path = figure_path(plot_dir, workload, "histogram")
        save(fig, path)
        paths.append(path)
    return paths


def profiled_workloads(profiling: Profiling) -> list[str]:
    return list(dict.fromkeys(p.workload for p in profiling.profiles))


def folded_stacks(profiling: Profiling, run_dir: Path, workload: str) -> dict[str, Path]:
    """server -> the folded stacks kept for `workload`, for every server that has them."""
    return {p.server: run_dir / p.folded for p in profiling.profiles if p.workload == workload and p.folded}


def breakdowns(profiling: Profiling, run_dir: Path, workload: str) -> dict[str, Breakdown]:
    return {server: breakdown(path) for server, path in folded_stacks(profiling, run_dir, workload).items()}


def drawn_diffs(profiling: Profiling, run_dir: Path, workload: str) -> list[list[str]]:
    """The run's differential pairs whose two servers both have folded stacks for `workload`."""
    present = folded_stacks(profiling, run_dir, workload)
    return [pair for pair in profiling.diff_pairs if set(pair) <= set(present)]


def diff_path(run_dir: Path, workload: str, before: str, after: str) -> Path:
    return run_dir / FLAMEGRAPH_DIR / f"{workload}-{before}-vs-{after}.svg"


def draw_profiles(profiling: Profiling, run_dir: Path, plot_dir: Path) -> list[Path]:
    """A breakdown bar chart per profiled workload and its differential flame graphs, from the folded stacks."""
    paths = []
    for workload in profiled_workloads(profiling):
        if found := breakdowns(profiling, run_dir, workload):
            paths.append(plot_breakdown(found, figure_path(plot_dir, workload, "breakdown")))
        folded = folded_stacks(profiling, run_dir, workload)
        for before, after in drawn_diffs(profiling, run_dir, workload):
            title = f"{workload}: {before} -> {after} (widths: {after}; red: {after} spends more, blue: less)"
            try:
                paths.append(differential(folded[before], folded[after],
                                          diff_path(run_dir, workload, before, after), title))
            except RenderError as error:
                raise BenchError(str(error)) from None
    return paths
