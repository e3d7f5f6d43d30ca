"""Two runs compared (pure): per-point ratios B / A of the cells they share, and how far B reproduces A."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.analysis import html
from bench.analysis.document import Bullets, Document, Entry, Section, Table, Text, page_of
from bench.analysis.metrics import METRICS
from bench.analysis.summary import Cell, median, summarize
from bench.errors import BenchError
from bench.results import Run, load, write_atomic


@dataclass(frozen=True)
class Comparison:
    workload: str
    server: str
    connections: int
    a: dict[str, float | None]  # METRICS key -> median in run A
    b: dict[str, float | None]
    ratio: dict[str, float | None]  # b / a


def compare(cells_a: list[Cell], cells_b: list[Cell]) -> list[Comparison]:
    by_key_b = {c.key: c for c in cells_b}
    rows = []
    for cell_a in cells_a:
        if (cell_b := by_key_b.get(cell_a.key)) is None:
            continue
        a = {m: median(cell_a, m) for m in METRICS}
        b = {m: median(cell_b, m) for m in METRICS}
        ratio = {m: b[m] / a[m] if a[m] and b[m] is not None else None for m in METRICS}
        rows.append(Comparison(*cell_a.key, a, b, ratio))
    return rows


@dataclass(frozen=True)
class Ranking:
    workload: str
    connections: int
    a: list[str]  # servers by median CPU µs/request, cheapest first
    b: list[str]
    # (x, y): A measured x cheaper than y with their [min–max] ranges apart, B measured y cheaper, apart too.
    # A pair whose ranges overlap in one run is a tie there: its order in the medians is noise, not a finding.
    reversed: list[tuple[str, str]]

    @property
    def same(self) -> bool:
        return self.a == self.b


@dataclass(frozen=True)
class Agreement:
    """How far two runs of the same points agree: do B's figures fall where A's did?"""

    cells: int  # cells with CPU µs/request in both runs
    overlapping: int  # whose [min–max] ranges of CPU µs/request overlap
    rankings: list[Ranking]  # per (workload, connections) measured in both


def agreement(cells_a: list[Cell], cells_b: list[Cell], metric: str = "cpu_us_per_request") -> Agreement:
    by_key_a = {c.key: c for c in cells_a}
    shared = [(by_key_a[c.key], c) for c in cells_b
              if c.key in by_key_a and by_key_a[c.key].stats[metric] and c.stats[metric]]
    overlapping = sum(a.stats[metric].low <= b.stats[metric].high and b.stats[metric].low <= a.stats[metric].high
                      for a, b in shared)
    groups: dict[tuple[str, int], list[tuple[Cell, Cell]]] = {}
    for a, b in shared:
        groups.setdefault((a.workload, a.connections), []).append((a, b))
    rankings = [Ranking(workload, connections,
                        *([c.server for c in sorted(side, key=lambda c: median(c, metric))]
                          for side in zip(*pairs, strict=True)),
                        reversed_pairs(pairs, metric))
                for (workload, connections), pairs in groups.items() if len(pairs) > 1]
    return Agreement(len(shared), overlapping, rankings)


def reversed_pairs(pairs: list[tuple[Cell, Cell]], metric: str) -> list[tuple[str, str]]:
    """The servers (x, y) that run A ranks x < y and run B y < x, each beyond its own spread."""
    def below(low: Cell, high: Cell) -> bool:
        return low.stats[metric].high < high.stats[metric].low

    return [(x_a.server, y_a.server) for x_a, x_b in pairs for y_a, y_b in pairs
            if below(x_a, y_a) and below(y_b, x_b)]


def agreement_lines(run_a: Run, run_b: Run) -> list[str]:
    """Whether B reproduces A: CPU µs/request ranges, the models' order, wall time, disturbed points."""
    found = agreement(summarize(run_a.records), summarize(run_b.records))
    lines = []
    if found.cells:
        lines.append(f"CPU µs/request [min–max] ranges overlap in {found.overlapping} of {found.cells} cells "
                     f"({found.overlapping / found.cells:.0%})")
    if found.rankings:
        count = len(found.rankings)
        consistent = sum(not r.reversed for r in found.rankings)
        lines.append(f"servers ranked by CPU µs/request: no two in opposite order beyond both runs' [min–max] "
                     f"ranges at {consistent} of {count} (workload, connections); the same order of medians at "
                     f"{sum(r.same for r in found.rankings)} of {count}")
        lines += [f"  opposite at {r.workload} {r.connections} conn.: "
                  + ", ".join(f"A {x} < {y}, B {y} < {x}" for x, y in r.reversed)
                  for r in found.rankings if r.reversed]
        lines += [f"  medians' order at {r.workload} {r.connections} conn.: A {' < '.join(r.a)}; "
                  f"B {' < '.join(r.b)}" for r in found.rankings if not r.same]
    walls = [wall_time_s(run) for run in (run_a, run_b)]
    if None not in walls:
        lines.append(f"wall time: A {walls[0]:.0f} s, B {walls[1]:.0f} s (B/A {walls[1] / walls[0]:.2f})")
    shares = []
    for name, run in (("A", run_a), ("B", run_b)):
        ok = [r for r in run.records if r.status == "ok"]
        shares.append(f"{name} {sum(r.disturbed for r in ok)} of {len(ok)}" +
                      (f" ({sum(r.disturbed for r in ok) / len(ok):.0%})" if ok else ""))
    lines.append(f"points disturbed by other load: {', '.join(shares)}")
    return lines


def wall_time_s(run: Run) -> float | None:
    if run.finished_at is None:
        return None
    return (datetime.fromisoformat(run.finished_at) - datetime.fromisoformat(run.started_at)).total_seconds()


def comparison_table(run_a: Run, run_b: Run) -> Table:
    """The medians' requests/s of both runs and the ratios B/A of the metrics either run has for some point."""
    rows = compare(summarize(run_a.records), summarize(run_b.records))
    if not rows:
        raise BenchError("the two runs share no (workload, server, connections) point")
    # Ratios of the metrics either run has for some point (a plaintext run has no idle-memory columns).
    shown = [m for m in METRICS.values() if m.compared and any(row.ratio[m.key] is not None for row in rows)]
    return Table(["workload", "server", "conn.", "req/s A", "req/s B", *(f"{m.short} B/A" for m in shown)], [
        [Entry(row.workload), Entry(row.server), Entry(str(row.connections), row.connections),
         *(Entry(f"{side['requests_per_s']:,.0f}", side["requests_per_s"]) if side["requests_per_s"]
           else Entry("failed") for side in (row.a, row.b)),
         *(Entry(f"{row.ratio[m.key]:.2f}", row.ratio[m.key]) if row.ratio[m.key] is not None else Entry("—")
           for m in shown)]
        for row in rows], align="ll" + "r" * (3 + len(shown)))


def comparison(a: str, run_a: Run, b: str, run_b: Run) -> Document:
    """`bench compare A B` as a page: how far B reproduces A, then its table; `a`, `b`: links to the runs' pages."""
    return Document(f"swissknife comparison: B = `{run_b.name}` against A = `{run_a.name}`",
                    [Bullets([f"A: [{run_a.name}]({a}), started {run_a.started_at}",
                              f"B: [{run_b.name}]({b}), started {run_b.started_at}"])],
                    [Section("Does B reproduce A?", [Text(line.strip()) for line in agreement_lines(run_a, run_b)]),
                     Section("Medians and ratios B/A", [comparison_table(run_a, run_b)])])


def write_comparison(a: Path, b: Path, page: Path) -> Path:
    """The comparison page of runs `a` and `b` at `page`, linking their reports relatively."""
    def link(run_dir: Path) -> str:
        target = page_of(run_dir) or run_dir
        return Path(os.path.relpath(target.resolve(), page.resolve().parent)).as_posix()

    write_atomic(page, html.page(comparison(link(a), load(a), link(b), load(b))))
    return page
