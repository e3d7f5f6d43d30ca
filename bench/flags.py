"""Why a point is not to be trusted: named flags with their evidence, by stated rules (pure).

A point's own flags come from its record (`point_flags`); `outlier` compares the repeats of one point
(`mark_outliers`); `remeasured` is set by the sweep on an attempt that replaced a flagged one. The sweep
measures a repeat again when it is flagged with one of REMEASURED_FOR.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bench.config import DISTURBED_CPU_SHARE, SATURATED_CPU_SHARE

if TYPE_CHECKING:
    from bench.results import Record

FLAGS = ("disturbed", "client_bound", "stalled", "clock_step", "timeouts", "connect_errors", "outlier", "remeasured")
REMEASURED_FOR = ("disturbed", "stalled", "clock_step")  # noise, a hang, a clock step: another attempt may be clean
INTERVAL_S = 0.1  # throughput inside a run: the server interface's tx bytes per this many seconds
RUNTIME_MARGIN_S = 1.0  # wrk's runtime beyond its duration by more than this: it hung somewhere
# wrk's wall-clock runtime off bench's monotonic timing of the run by more than this: the wall clock stepped;
# wrk's timeouts (every request in flight then looks that old) and latencies of that run are wrong too.
CLOCK_STEP_S = 0.5
# Throughput collapsed: intervals below this share of the run's typical level (its 90th percentile) ...
COLLAPSE_SHARE = 0.1
STALL_S = 0.5  # ... for at least this long in a row
# Repeats disagree: a repeat further from the point's median than OUTLIER_MADS robust standard deviations
# (1.4826 x the median absolute deviation) and than OUTLIER_SHARE of the median; three repeats at least.
OUTLIER_MADS = 3.5
OUTLIER_SHARE = 0.25
OUTLIER_METRICS = {"requests_per_s": "requests/s"}  # CPU per request is bimodal at sleep-5: not a rule for it


def collapse_s(per_interval: Sequence[int], interval_s: float, runtime_s: float) -> float:
    """The longest stretch, in seconds, during which throughput stayed below COLLAPSE_SHARE of its typical
    level, within wrk's runtime counted from the first interval with traffic (before it: wrk starting)."""
    start = next((i for i, sent in enumerate(per_interval) if sent), None)
    if start is None:
        return 0.0
    window = per_interval[start:start + max(round(runtime_s / interval_s), 1)]
    level = statistics.quantiles(window, n=10)[-1] if len(window) > 1 else window[0]
    longest = current = 0
    for sent in window:
        current = current + 1 if sent < COLLAPSE_SHARE * level else 0
        longest = max(longest, current)
    return longest * interval_s


def point_flags(record: Record, duration_s: float, timeout_s: float, interval_s: float = INTERVAL_S) -> dict[str, str]:
    """flag -> evidence for one measured attempt; `duration_s`: wrk's --duration, `timeout_s` its --timeout,
    `interval_s`: what each of record.interval_tx_bytes covers."""
    found = {}
    if (other := record.other_cpu_share or 0) >= DISTURBED_CPU_SHARE:
        found["disturbed"] = (f"other processes used {other:.2f} CPUs while wrk ran "
                              f"(threshold {DISTURBED_CPU_SHARE})")
    if record.client_bound:
        found["client_bound"] = (f"wrk used {record.client_cpu_share:.0%} of its CPU, the server "
                                 f"{record.server_cpu_share:.0%} of its own (threshold {SATURATED_CPU_SHARE:.0%})")
    runtime, elapsed = record.wrk_runtime_s, record.wrk_elapsed_s
    if runtime is not None and elapsed is not None and (runtime - elapsed > CLOCK_STEP_S
                                                        or runtime < duration_s - CLOCK_STEP_S):
        found["clock_step"] = (f"wrk's runtime {runtime:.1f} s by the wall clock, {elapsed:.1f} s by bench's "
                               f"monotonic clock: the wall clock stepped (rates use {record.duration_s:.1f} s; "
                               f"wrk's timeouts and latencies of this run count the step)")
    stalls = []
    if (record.duration_s or 0) > duration_s + RUNTIME_MARGIN_S:
        unsure = "" if elapsed is not None else (" by wrk's wall clock (a run from before bench timed wrk itself: "
                                                 "a hang or a wall clock step)")
        stalls.append(f"wrk ran {record.duration_s:.1f} s for a {duration_s:g} s run{unsure} "
                      f"(margin {RUNTIME_MARGIN_S:g} s)")
    if record.interval_tx_bytes and (gap := collapse_s(record.interval_tx_bytes, interval_s,
                                                       record.duration_s or 0)) >= STALL_S:
        stalls.append(f"throughput below {COLLAPSE_SHARE:.0%} of its level for {gap:.1f} s "
                      f"(per {interval_s * 1000:.0f} ms: interval_tx_bytes)")
    if stalls:
        found["stalled"] = "; ".join(stalls)
    if record.errors_timeout:
        found["timeouts"] = f"{record.errors_timeout:,} requests timed out (wrk --timeout {timeout_s:g} s)"
    if record.errors_connect:
        found["connect_errors"] = f"{record.errors_connect:,} connections failed to open"
    return found


def add_flags(record: Record, found: dict[str, str]) -> None:
    for name, evidence in found.items():
        if name not in record.flags:
            record.flags.append(name)
        record.flag_details[name] = evidence
    record.flags.sort(key=FLAGS.index)


def current(records: Sequence[Record]) -> list[Record]:
    """The measured attempts that stand: ok and not replaced by a later attempt."""
    return [r for r in records if r.status == "ok" and r.superseded_by is None]


def mark_outliers(records: Sequence[Record]) -> None:
    """Flag `outlier` on the standing repeats of each point that disagree with the others (the rule above);
    flags set by an earlier call are recomputed."""
    for record in records:
        if "outlier" in record.flags:
            record.flags.remove("outlier")
            del record.flag_details["outlier"]
    groups: dict[tuple[str, str, int], list[Record]] = {}
    for record in current(records):
        groups.setdefault((record.server, record.workload, record.connections), []).append(record)
    for group in groups.values():
        if len(group) < 3:
            continue
        for metric, label in OUTLIER_METRICS.items():
            values = [getattr(r, metric) for r in group]
            middle = statistics.median(values)
            mad = statistics.median(abs(v - middle) for v in values)
            tolerance = max(OUTLIER_MADS * 1.4826 * mad, OUTLIER_SHARE * middle)
            for record, value in zip(group, values, strict=True):
                if abs(value - middle) > tolerance:
                    evidence = (f"{label} {value:,.1f} against the repeats' median {middle:,.1f}: off by more than "
                                f"{tolerance:,.1f} (max of {OUTLIER_MADS} x 1.4826 x MAD {mad:,.1f} and "
                                f"{OUTLIER_SHARE:.0%} of the median)")
                    add_flags(record, {"outlier": "; ".join(filter(None, [record.flag_details.get("outlier"),
                                                                          evidence]))})


def needs_remeasure(record: Record) -> list[str]:
    return [name for name in REMEASURED_FOR if name in record.flags]
