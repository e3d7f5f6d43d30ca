"""openloop's histograms: percentiles by HdrHistogram's rule and exact merges, on reports from real runs.

tests/unit/data/openloop/stall-c2.out and stall-c6.out: two openloop runs started together against one
loopback tests/stall_server.py (1 s stall every 5 s), 500 requests/s each for 5 s, 2 and 6 connections,
routes 99:/ and 1:/bytes/100, seeds 2 and 6.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import loadgen

DATA = Path(__file__).with_name("data") / "openloop"
REPORTS = [loadgen.parse((DATA / f"stall-c{c}.out").read_text()) for c in (2, 6)]


def samples(*histograms: loadgen.Histogram) -> list[int]:
    """Every recorded value (its bucket's highest equivalent), one per request, sorted."""
    return sorted(v + loadgen.width(v) - 1 for h in histograms for v, count in h for _ in range(count))


def test_bucket_width_is_within_one_percent_of_its_value() -> None:
    for report in REPORTS:
        for value, _ in report.histogram_ns:
            assert loadgen.width(value) == 1 or loadgen.width(value) / value <= 1 / 128


def test_merged_percentiles_are_those_of_all_the_samples() -> None:
    merged = loadgen.merge(REPORTS)
    for name in ("histogram_ns", "uncorrected_ns"):
        values = samples(*(getattr(r, name) for r in REPORTS))
        figures = loadgen.figures_us(getattr(merged, name))
        for key, p in loadgen.PERCENTILES.items():
            assert figures[key] == values[max(1, math.ceil(p / 100 * len(values))) - 1] / 1e3, key
        assert figures["max"] == values[-1] / 1e3
    assert merged.requests == sum(r.requests for r in REPORTS) == sum(c for _, c in merged.histogram_ns)
    assert merged.rate == 1000 and merged.connections == 8
    assert [route.requests for route in merged.routes] == [sum(r.routes[i].requests for r in REPORTS)
                                                           for i in range(2)]
    assert [s[0] for s in merged.series] == [sum(r.series[i][0] for r in REPORTS) for i in range(len(merged.series))]


def test_merging_one_report_is_that_report() -> None:
    assert loadgen.merge(REPORTS[:1]) is REPORTS[0]


def test_the_seeded_mix_keeps_its_proportions() -> None:
    for report in REPORTS:
        fast, slow = report.routes
        assert fast.requests + slow.requests == report.scheduled
        assert slow.requests / report.scheduled == pytest.approx(0.01, abs=0.006)


def test_the_stall_shows_in_the_corrected_figures_only() -> None:
    merged = loadgen.merge(REPORTS)
    assert loadgen.figures_us(merged.histogram_ns)["p99"] > 800_000
    assert loadgen.figures_us(merged.uncorrected_ns)["p99"] < 100_000


def test_an_empty_histogram_has_no_figures() -> None:
    assert set(loadgen.figures_us(()).values()) == {None}
