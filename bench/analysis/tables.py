"""Tables of cells: median [min–max] per server and connection count (or experiment axis value), each entry
with the badges that say why it is less than a clean measurement."""

from __future__ import annotations

from collections.abc import Callable

from bench.analysis.document import BADGE_MARKS, Badge, Entry, Table
from bench.analysis.metrics import METRICS
from bench.analysis.summary import Cell, Spread
from bench.config import DISTURBED_CPU_SHARE, SATURATED_CPU_SHARE

CLIENT_BOUND_MARK = BADGE_MARKS["client-bound"]
DISTURBED_MARK = BADGE_MARKS["disturbed"]
ERRORS_MARK = BADGE_MARKS["errors"]


def number(value: float, divisor: float = 1, decimals: int = 0) -> str:
    return f"{value / divisor:,.{decimals}f}"


def spread_text(value: Spread, divisor: float, decimals: int) -> str:
    return (f"{number(value.median, divisor, decimals)} "
            f"[{number(value.low, divisor, decimals)}–{number(value.high, divisor, decimals)}]")


# What each kind of badge means; a badge's own reason is the point's evidence.
MEANINGS = {
    "client-bound": f"wrk used ≥{SATURATED_CPU_SHARE:.0%} of its CPU while the server used less of its own: the load "
                    "generator set the pace, compare CPU per request",
    "disturbed": f"other processes used ≥{DISTURBED_CPU_SHARE} CPU while wrk ran",
    "errors": "wrk counted errors: the repeat's figures are not a clean measurement",
    "failed": "the server failed here",
    "unsupported": "the model cannot serve this point, by design",
}


def badges(cell: Cell) -> tuple[Badge, ...]:
    """The cell's flags with their evidence, from its repeats."""
    found = []
    if cell.client_bound:
        found.append(Badge("client-bound", f"{cell.client_bound} of {cell.measured} repeats"))
    if cell.disturbed:
        found.append(Badge("disturbed", f"{cell.disturbed} of {cell.measured} repeats, other processes up to "
                                        f"{cell.stats['other_cpu_share'].high:.2f} CPU"))
    if cell.errors:
        found.append(Badge("errors", cell.errors))
    if cell.failed:
        found.append(Badge("failed", f"{cell.failed} repeats: {cell.failure}"))
    elif cell.unsupported:
        found.append(Badge("unsupported", cell.failure or "unsupported"))
    return tuple(found)


def flagged(cells: list[Cell]) -> list[str]:
    """One line per kind of flag (not failures: those have their own list), naming each point and its evidence."""
    lines = []
    for kind in ("client-bound", "disturbed", "errors"):
        points = [f"{c.server} @ {c.connections} ({badge.reason})" for c in cells for badge in badges(c)
                  if badge.kind == kind]
        if points:
            lines.append(f"{kind} {BADGE_MARKS[kind]} ({MEANINGS[kind]}): {'; '.join(points)}")
    return lines


def cell_entry(cell: Cell | None, metric: str) -> Entry:
    if cell is None:
        return Entry("")
    value = cell.stats[metric]
    if value is None:
        if cell.stats["requests_per_s"] is not None:
            return Entry("—")  # measured, but this metric does not apply (no idle connections at K = 0)
        return Entry("unsupported" if cell.unsupported else "failed", badges=badges(cell))
    found = METRICS[metric]
    return Entry(spread_text(value, found.divisor, found.decimals), value.median / found.divisor, badges(cell))


def table(cells: list[Cell], metric: str, heading: Callable[[int], str] = lambda n: f"{n} conn.",
          title: str | None = None) -> Table:
    """Rows: servers; columns: `cells[i].connections` (the connection count or an experiment's axis value)."""
    servers = list(dict.fromkeys(c.server for c in cells))
    connections = sorted({c.connections for c in cells})
    by_key = {(c.server, c.connections): c for c in cells}
    return Table(["server", *(heading(n) for n in connections)],
                 [[Entry(server), *(cell_entry(by_key.get((server, n)), metric) for n in connections)]
                  for server in servers], title)
