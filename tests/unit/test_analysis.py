"""Results into words and pictures: summary, compare, report and plots from a results file alone (pure)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from bench.analysis.compare import compare
from bench.analysis.metrics import FIGURES, METRICS, TABLED
from bench.analysis.report import write_outputs
from bench.analysis.summary import median, summarize
from bench.results import Record, load

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "results" / "reference"


def records(server: str, rps: list[float], status: str = "ok") -> list[Record]:
    return [Record(server, "plaintext", 16, i + 1, status, requests_per_s=value, cpu_us_per_request=1e6 / value,
                   latency_p50_us=100.0, latency_p99_us=900.0 + i, other_cpu_share=0.3 * (i == 0))
            for i, value in enumerate(rps)]


def test_repeats_fold_into_median_and_spread_with_flags_counted():
    (cell,) = summarize(records("epoll", [10_000, 30_000, 20_000]))
    assert (cell.stats["requests_per_s"].median, cell.stats["requests_per_s"].low) == (20_000, 10_000)
    assert cell.stats["requests_per_s"].high == 30_000 and cell.disturbed == 1 and cell.failed == 0
    (failed,) = summarize([replace(r, requests_per_s=None, failure="boom") for r in records("poll", [1], "failed")])
    assert failed.failed == 1 and failed.stats["requests_per_s"] is None and failed.failure == "boom"


def test_compare_gives_ratios_b_over_a_for_shared_points_only():
    a = summarize(records("epoll", [10_000]) + records("poll", [5_000]))
    b = summarize(records("epoll", [15_000]))
    (row,) = compare(a, b)
    assert row.server == "epoll" and row.ratio["requests_per_s"] == 1.5
    assert round(row.ratio["cpu_us_per_request"], 4) == round(1 / 1.5, 4)


def test_every_metric_is_defined_once_and_drawn_and_tabled_from_that_definition():
    assert [m.key for m in sum(FIGURES.values(), [])] == list(METRICS)
    assert {m.key for m in TABLED} == {"requests_per_s", "latency_p99_us", "cpu_us_per_request", "engine_cpu_share"}
    assert set(METRICS) <= set(Record.__dataclass_fields__)


def test_report_and_plots_are_drawn_from_results_json_alone(tmp_path):
    """A trimmed copy of the reference run (plaintext and the idle experiment) redrawn in a fresh directory."""
    document = json.loads((REFERENCE / "results.json").read_text())
    keep = {"plaintext", "idle-0", "idle-10000"}
    document["records"] = [r for r in document["records"] if r["workload"] in keep]
    document["config"]["workloads"] = [w for w in document["config"]["workloads"] if w["name"] in keep]
    document["profiling"] = None
    (tmp_path / "results.json").write_text(json.dumps(document))
    paths = write_outputs(tmp_path)
    names = {p.name for p in paths}
    assert {"plaintext-requests.png", "plaintext-latency.png", "plaintext-cpu.png",
            "idle-connections-requests.png", "report.md"} <= names
    assert all(p.stat().st_size > 5_000 for p in paths if p.suffix == ".png")
    report = (tmp_path / "report.md").read_text()
    cells = {c.key: c for c in summarize(load(tmp_path).records)}
    epoll_rps = median(cells[("plaintext", "epoll", 16)], "requests_per_s")
    assert f"| epoll | {epoll_rps:,.0f} [" in report
    assert "### requests/s" in report and "### p99 latency (ms)" in report
    assert "## Experiment: idle-connections" in report
    # redrawing gives the same words
    shutil.copy(tmp_path / "report.md", tmp_path / "first.md")
    write_outputs(tmp_path)
    assert (tmp_path / "report.md").read_text() == (tmp_path / "first.md").read_text()
