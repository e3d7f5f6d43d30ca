"""Per-point ratios between two runs (B / A) of the cells they share (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.analysis.metrics import METRICS
from bench.analysis.summary import Cell, median


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
                          for side in zip(*pairs, strict=True)))
                for (workload, connections), pairs in groups.items() if len(pairs) > 1]
    return Agreement(len(shared), overlapping, rankings)
