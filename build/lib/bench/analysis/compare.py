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
