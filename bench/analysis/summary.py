"""Repeats folded into one cell per (workload, server, connections): median and min–max (pure)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from bench.analysis.metrics import METRICS
from bench.results import Record


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float


@dataclass(frozen=True)
class Cell:
    workload: str
    server: str
    connections: int
    stats: dict[str, Spread | None]  # METRICS key -> spread over the ok repeats
    failed: int
    unsupported: int  # repeats the model cannot serve by design (not run)
    client_bound: int  # repeats flagged client-bound
    disturbed: int  # repeats during which other processes used CPU
    failure: str | None  # the first failure's reason
    measured: int = 0  # ok repeats
    errors: str | None = None  # the ok repeats that saw wrk errors, with their figures: why a spread is wide

    @property
    def key(self) -> tuple[str, str, int]:
        return self.workload, self.server, self.connections


def spread(values: Iterable[float | None]) -> Spread | None:
    present = [v for v in values if v is not None]
    return Spread(statistics.median(present), min(present), max(present)) if present else None


def summarize(records: list[Record]) -> list[Cell]:
    """Cells in the order their points were run."""
    groups: dict[tuple[str, str, int], list[Record]] = {}
    for record in records:
        groups.setdefault((record.workload, record.server, record.connections), []).append(record)
    cells = []
    for (workload, server, connections), group in groups.items():
        ok = [r for r in group if r.status == "ok"]
        failures = [r.failure for r in group if r.status != "ok"]  # failed or unsupported: why
        cells.append(Cell(
            workload, server, connections,
            stats={metric: spread(getattr(r, metric) for r in ok) for metric in METRICS},
            failed=sum(r.status == "failed" for r in group),
            unsupported=sum(r.status == "unsupported" for r in group),
            client_bound=sum(bool(r.client_bound) for r in ok),
            disturbed=sum(r.disturbed for r in ok),
            failure=failures[0] if failures else None,
            measured=len(ok),
            errors="; ".join(error_note(r) for r in ok if r.wrk_errors) or None,
        ))
    return cells


def error_note(record: Record) -> str:
    kinds = ", ".join(f"{count} {kind}" for kind in ("connect", "read", "write", "status", "timeout")
                      if (count := getattr(record, f"errors_{kind}")))
    busy = f", server CPU {record.server_cpu_share:.0%} busy" if record.server_cpu_share is not None else ""
    return (f"repeat {record.repeat}: {record.wrk_errors} wrk errors ({kinds}), "
            f"{record.requests_per_s:,.0f} requests/s{busy}")


def median(cell: Cell, metric: str) -> float | None:
    value = cell.stats[metric]
    return value.median if value else None
