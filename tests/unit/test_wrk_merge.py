"""Several wrk runs merged exactly (bench/wrk.py), on reports recorded from real wrk runs.

tests/unit/data/wrk/epoll-c8.out and epoll-c64.out: two wrk 4.1 runs started together against one
loopback epoll server (`python3 -m servers epoll --host 127.0.0.1 -p PORT`), 2 s, 8 and 64
connections, SWISSKNIFE_WRK_HISTOGRAM=1 wrk --threads=1 --timeout=2s -s bench/wrk/report.lua URL -- 1 keep-alive.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import wrk
from bench.config import WORKLOADS

DATA = Path(__file__).with_name("data") / "wrk"


def recorded(name: str) -> wrk.WrkReport:
    return wrk.parse((DATA / f"{name}.out").read_text())


def samples(*reports: wrk.WrkReport) -> list[int]:
    """Every latency the runs recorded, one entry per response, sorted: the concatenated raw data."""
    return sorted(value for report in reports for value, count in report.histogram for _ in range(count))


def nth_smallest(values: list[int], p: float) -> int:
    """The sample at wrk's rank round(p/100 * n + 0.5) (1-based), read off the sorted list."""
    return values[math.floor(p / 100 * len(values) + 1) - 1]


REPORTS = [recorded("epoll-c8"), recorded("epoll-c64")]


def test_percentiles_from_a_recorded_histogram_are_wrks_own():
    # The same rank rule as wrk's stats_percentile: checked against the figures wrk printed itself.
    for report in REPORTS:
        for name, p in wrk.PERCENTILES.items():
            assert wrk.percentile(report.histogram, p) == report.latency_us[name], (name, report.requests)
        assert report.histogram[-1][0] == report.latency_us["max"]


def test_merge_sums_the_counts_and_recomputes_percentiles_from_the_concatenated_samples():
    merged = wrk.merge(REPORTS)
    assert merged.requests == sum(r.requests for r in REPORTS) == 10440 + 71552
    assert merged.bytes == sum(r.bytes for r in REPORTS)
    assert merged.errors == {kind: sum(r.errors[kind] for r in REPORTS) for kind in REPORTS[0].errors}
    assert merged.duration_us == max(r.duration_us for r in REPORTS)
    everything = samples(*REPORTS)
    assert sum(count for _, count in merged.histogram) == len(everything)
    for name, p in wrk.PERCENTILES.items():
        assert merged.latency_us[name] == nth_smallest(everything, p), name
    assert merged.latency_us["max"] == max(everything)
    assert merged.latency_us["mean"] == pytest.approx(sum(everything) / len(everything))
    # Not what averaging would give: the 64-connection run weighs seven times the 8-connection one.
    assert merged.latency_us["p99"] != (REPORTS[0].latency_us["p99"] + REPORTS[1].latency_us["p99"]) / 2


def test_merge_of_one_report_is_that_report_and_order_does_not_matter():
    assert wrk.merge(REPORTS[:1]) is REPORTS[0]
    assert wrk.merge(REPORTS) == wrk.merge(REPORTS[::-1])


def test_merge_needs_histograms():
    bare = wrk.WrkReport(1, 1, 1, dict.fromkeys(REPORTS[0].errors, 0), {})
    with pytest.raises(ValueError, match="histograms"):
        wrk.merge([REPORTS[0], bare])


def test_figures_of_small_histograms():
    assert wrk.latency_figures(())["p99"] is None and wrk.percentile((), 50) is None
    figures = wrk.latency_figures(((100, 1), (200, 2), (900, 1)))  # 100 200 200 900
    # Ranks round(p/100 * 4 + 0.5): p50 -> 3rd, p75 -> round(3.5) = 4th (C rounds halves up).
    assert (figures["mean"], figures["max"], figures["p50"], figures["p75"]) == (350, 900, 200, 900)
    assert figures["stdev"] == pytest.approx(math.sqrt((250**2 + 150**2 * 2 + 550**2) / 3))


def test_command_asks_for_the_histogram_through_the_environment():
    plain = wrk.command("http://[::1]:1/", WORKLOADS["plaintext"], 4, 1, 1, 2)
    assert plain[0] == "wrk"
    assert wrk.command("http://[::1]:1/", WORKLOADS["plaintext"], 4, 1, 1, 2, histogram=True) == [
        "env", f"{wrk.HISTOGRAM_ENV}=1", *plain]
