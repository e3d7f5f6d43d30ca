"""Markdown tables of cells: median [min–max] per server and connection count (or experiment axis value)."""

from __future__ import annotations

from collections.abc import Callable

from bench.analysis.metrics import METRICS
from bench.analysis.summary import Cell, Spread

CLIENT_BOUND_MARK = "†"
DISTURBED_MARK = "‡"


def number(value: float, divisor: float = 1, decimals: int = 0) -> str:
    return f"{value / divisor:,.{decimals}f}"


def spread_text(value: Spread, divisor: float, decimals: int) -> str:
    return (f"{number(value.median, divisor, decimals)} "
            f"[{number(value.low, divisor, decimals)}–{number(value.high, divisor, decimals)}]")


def cell_text(cell: Cell | None, metric: str) -> str:
    if cell is None:
        return ""
    value = cell.stats[metric]
    if value is None:
        if cell.stats["requests_per_s"] is not None:
            return "—"  # measured, but this metric does not apply (no idle connections at K = 0)
        return "unsupported" if cell.unsupported else "failed"
    found = METRICS[metric]
    marks = CLIENT_BOUND_MARK * bool(cell.client_bound) + DISTURBED_MARK * bool(cell.disturbed)
    return spread_text(value, found.divisor, found.decimals) + (f" {marks}" if marks else "")


def table(cells: list[Cell], metric: str, heading: Callable[[int], str] = lambda n: f"{n} conn.") -> list[str]:
    """Rows: servers; columns: `cells[i].connections` (the connection count or an experiment's axis value)."""
    servers = list(dict.fromkeys(c.server for c in cells))
    connections = sorted({c.connections for c in cells})
    by_key = {(c.server, c.connections): c for c in cells}
    lines = [f"| server | {' | '.join(heading(n) for n in connections)} |",
             f"|---|{'---:|' * len(connections)}"]
    for server in servers:
        row = [cell_text(by_key.get((server, n)), metric) for n in connections]
        lines.append(f"| {server} | {' | '.join(row)} |")
    return lines
