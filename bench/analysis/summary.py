"""Repeats folded into one cell per (workload, server, connections): median and min–max (pure).

The statistics are over the standing attempts (a re-measured repeat's last one, the flagged attempts it
replaced left out). The median takes every standing repeat (one bad repeat in three cannot move it past
the others); the spread [min–max], the error bars, leaves out the repeats flagged EXCLUDED (a stalled
run, a repeat the others disagree with) while a clean one remains: those are counted and drawn apart.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from bench.analysis.metrics import METRICS
from bench.flags import FLAGS, current, needs_remeasure
from bench.results import Record

EXCLUDED = ("stalled", "outlier")


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
    flags: dict[str, int] = field(default_factory=dict)  # flag -> standing repeats that carry it
    excluded: dict[str, list[float]] = field(default_factory=dict)  # metric -> values of repeats left out
    remeasured: int = 0  # repeats measured again

    @property
    def key(self) -> tuple[str, str, int]:
        return self.workload, self.server, self.connections


def spread(values: Iterable[float | None], flagged: Iterable[float | None] = ()) -> Spread | None:
    """Median of `values` and `flagged` together; min–max of `values` (and the median)."""
    present, left_out = [v for v in values if v is not None], [v for v in flagged if v is not None]
    if not present:
        return None
    middle = statistics.median(present + left_out)
    return Spread(middle, min(*present, middle), max(*present, middle))


def summarize(records: list[Record]) -> list[Cell]:
    """Cells in the order their points were run."""
    groups: dict[tuple[str, str, int], list[Record]] = {}
    for record in records:
        if record.rate_asked is not None:  # open-loop points have a rate axis of their own (analysis.latency)
            continue
        groups.setdefault((record.workload, record.server, record.connections), []).append(record)
    cells = []
    for (workload, server, connections), group in groups.items():
        standing = [r for r in group if r.superseded_by is None]
        ok = current(group)
        clean = [r for r in ok if not set(EXCLUDED) & set(r.flags)] or ok
        left_out = [r for r in ok if r not in clean]
        failures = [r.failure for r in standing if r.status != "ok"]  # failed or unsupported: why
        cells.append(Cell(
            workload, server, connections,
            stats={metric: spread((getattr(r, metric) for r in clean), (getattr(r, metric) for r in left_out))
                   for metric in METRICS},
            failed=sum(r.status == "failed" for r in standing),
            unsupported=sum(r.status == "unsupported" for r in standing),
            client_bound=sum(bool(r.client_bound) for r in ok),
            disturbed=sum(r.disturbed for r in ok),
            failure=failures[0] if failures else None,
            measured=len(ok),
            errors="; ".join(error_note(r) for r in ok if r.wrk_errors) or None,
            flags=dict(Counter(name for r in ok for name in r.flags)),
            excluded={metric: [v for r in left_out if (v := getattr(r, metric)) is not None] for metric in METRICS},
            remeasured=sum(r.attempt == 1 and r.superseded_by is not None for r in group),
        ))
    return cells


def error_note(record: Record) -> str:
    kinds = ", ".join(f"{count} {kind}" for kind in ("connect", "read", "write", "status", "timeout")
                      if (count := getattr(record, f"errors_{kind}")))
    busy = f", server CPU {record.server_cpu_share:.0%} busy" if record.server_cpu_share is not None else ""
    return (f"repeat {record.repeat}: {record.wrk_errors} wrk errors ({kinds}), "
            f"{record.requests_per_s:,.0f} requests/s{busy}")


def flag_counts(records: list[Record]) -> dict[str, int]:
    """flag -> standing measured repeats that carry it, in flags.FLAGS order."""
    found = Counter(name for r in current(records) for name in r.flags)
    return {name: found[name] for name in FLAGS if found[name]}


@dataclass(frozen=True)
class Remeasured:
    points: int  # repeats measured again
    attempts: int  # extra attempts in all
    still_flagged: int  # of those repeats, how many stayed flagged for re-measurement after the last try


def remeasured(records: list[Record]) -> Remeasured:
    again = {r.key for r in records if r.attempt > 1}
    still = sum(1 for r in current(records) if r.key in again and needs_remeasure(r))
    return Remeasured(len(again), sum(r.attempt > 1 for r in records), still)


def median(cell: Cell, metric: str) -> float | None:
    value = cell.stats[metric]
    return value.median if value else None
