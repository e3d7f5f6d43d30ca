"""Results into words and pictures: summary, compare, report and plots from a results file alone (pure)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

from bench.analysis.compare import agreement, compare
from bench.analysis.document import markdown
from bench.analysis.html import page
from bench.analysis.metrics import FIGURES, METRICS, TABLED, figures, tabled
from bench.analysis.report import document as report_document
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


def test_agreement_counts_overlapping_ranges_and_compares_the_servers_order():
    def cells(cpu: dict[str, list[float]]):
        return summarize([r for server, values in cpu.items() for r in records(server, [1e6 / v for v in values])])
    a = cells({"epoll": [10, 12, 11], "poll": [20, 22, 21], "select": [30, 31, 32]})
    b = cells({"epoll": [12.5, 13, 14], "poll": [19, 23, 25], "select": [14, 15, 16]})
    found = agreement(a, b)
    assert (found.cells, found.overlapping) == (3, 1)  # poll overlaps; epoll and select moved
    (ranking,) = found.rankings
    assert ranking.a == ["epoll", "poll", "select"] and ranking.b == ["epoll", "select", "poll"] and not ranking.same
    # poll < select in A, select < poll in B, both beyond the ranges; epoll < poll in A, tied with poll in B.
    assert ranking.reversed == [("poll", "select")]
    tied = agreement(a, cells({"epoll": [12.5, 13, 14], "poll": [19, 23, 25], "select": [21, 22, 27]}))
    assert not tied.rankings[0].same and tied.rankings[0].reversed == []  # select and poll tie in B: no reversal


def test_compare_command_says_how_far_b_reproduces_a(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(REFERENCE / "results.json", tmp_path / name / "results.json")
    done = subprocess.run([sys.executable, "-m", "bench", "compare", str(tmp_path / "a"), str(tmp_path / "b")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    cells = len([c for c in summarize(load(REFERENCE).records) if c.stats["cpu_us_per_request"]])
    assert f"ranges overlap in {cells} of {cells} cells (100%)" in done.stdout
    assert "wall time: A" in done.stdout and "(B/A 1.00)" in done.stdout
    assert "[min–max] ranges at" in done.stdout and "opposite at" not in done.stdout
    assert "medians' order at" not in done.stdout
    # Columns only for what the runs measured (this one predates the idle-memory fields), no shares of idle CPUs.
    assert "CPU/req B/A" in done.stdout and "KiB/idle" not in done.stdout and "engine B/A" not in done.stdout


def test_every_metric_is_defined_once_and_drawn_and_tabled_from_that_definition():
    assert [m.key for m in sum(figures("idle-connections").values(), [])] == list(METRICS)
    assert {m.key for m in TABLED} == {"requests_per_s", "latency_p99_us", "cpu_us_per_request", "engine_cpu_share"}
    assert {m.key for m in tabled("idle-connections")} == {
        "idle_server_kib_per_connection", "idle_holder_kib_per_connection", "idle_kernel_kib_per_connection",
        "idle_open_s"}
    assert not any(m.experiment for m in sum(FIGURES.values(), []))  # a workload's own figures
    assert set(METRICS) <= set(Record.__dataclass_fields__)


def idle_record(server: str, count: int, rps: float, server_kib: float | None = None, status: str = "ok",
                failure: str | None = None) -> Record:
    if status != "ok":
        return Record(server, f"idle-{count}", 32, 1, status, failure=failure)
    costs = {} if server_kib is None else {
        "idle_held": count, "idle_on_server": count, "idle_open_s": count / 10_000,
        "idle_server_kib_per_connection": server_kib, "idle_holder_kib_per_connection": 0.25,
        "idle_kernel_kib_per_connection": 4.5}
    return Record(server, f"idle-{count}", 32, 1, "ok", requests=int(rps), requests_per_s=rps,
                  cpu_us_per_request=1e6 / rps, latency_p50_us=100.0, latency_p99_us=900.0, **costs)


def test_the_idle_section_tells_who_stays_flat_what_a_connection_costs_and_where_each_model_stops(tmp_path):
    document = json.loads((REFERENCE / "results.json").read_text())
    document["config"]["workloads"] = [{"name": f"idle-{k}", "path": "/", "pipeline": 1, "close": False, "idle": k,
                                        "connections": [32]} for k in (0, 10_000, 100_000)]
    document["profiling"] = None
    stop = "one process may open 20,000 files on this host"
    records = [idle_record("epoll", 0, 70_000), idle_record("epoll", 10_000, 68_000, 1.9),
               idle_record("epoll", 100_000, 0, status="unsupported", failure=stop),
               idle_record("poll", 0, 70_000), idle_record("poll", 10_000, 7_000, 1.8),
               idle_record("poll", 100_000, 0, status="unsupported", failure=stop),
               idle_record("nginx", 0, 120_000), idle_record("nginx", 10_000, 118_000, 0.6),
               idle_record("nginx", 100_000, 110_000, 0.75)]
    document["records"] = [asdict(r) for r in records]
    (tmp_path / "results.json").write_text(json.dumps(document))
    names = {p.name for p in write_outputs(tmp_path)}
    assert {"idle-connections-memory.png", "idle-connections-opening.png"} <= names
    report = (tmp_path / "report.md").read_text()
    assert "Flat (at least 80% of the throughput kept) up to the most idle connections each was run with: " \
           "nginx to 100,000, epoll to 10,000." in report
    assert f"epoll unsupported from 100,000 idle connections ({stop})" in report
    assert ("at the most each model held (resident set growth of all the server's processes while they were "
            "opened, over their number): nginx 0.75 KiB at 100,000, poll 1.80 KiB at 10,000, epoll 1.90 KiB at "
            "10,000.") in report
    assert "the holders on the client side: 0.25–0.25 KiB per connection" in report
    assert "Opening 100,000 until the server had accepted them all took nginx 10.0 s." in report
    table = report.split("### server KiB per idle connection (resident set, all processes)")[1].split("###")[0]
    assert "| server | 0 idle connections | 10,000 idle connections | 100,000 idle connections |" in table
    assert "| epoll | — | 1.90 [1.90–1.90] | unsupported |" in table
    assert "| nginx | — | 0.60 [0.60–0.60] | 0.75 [0.75–0.75] |" in table


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
    # redrawing gives the same words, and the same page (the plots need not be drawn again for that)
    run = load(tmp_path)
    again = report_document(run, summarize(run.records), tmp_path / "plots", tmp_path)
    assert markdown(again) == report and page(again) == (tmp_path / "report.html").read_text()
