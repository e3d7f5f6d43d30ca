"""report.html, index.html and the comparison page, from results files alone (pure); only what ran is shown.
The browser test (tests/test_report_html.py) opens them in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from bench.analysis.html import inline
from bench.analysis.index import write_index
from bench.analysis.report import document, write_gil_report
from bench.analysis.summary import summarize
from bench.errors import BenchError
from bench.results import WRK_DIR, load
from bench.wrk import parse

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "results" / "reference"
PUBLISHED = ROOT / "results" / "reference-docker"
WRK_DATA = Path(__file__).with_name("data") / "wrk"


def trimmed_run(tmp_path: Path, keep: set[str], profiling: bool = False) -> Path:
    """A copy of the reference run's results.json with only the workloads `keep`."""
    document_ = json.loads((REFERENCE / "results.json").read_text())
    document_["records"] = [r for r in document_["records"] if r["workload"] in keep]
    document_["config"]["workloads"] = [w for w in document_["config"]["workloads"] if w["name"] in keep]
    if not profiling:
        document_["profiling"] = None
    (tmp_path / "results.json").write_text(json.dumps(document_))
    return tmp_path


def pages(run_dir: Path) -> tuple[str, str]:
    from bench.analysis.document import markdown
    from bench.analysis.html import page
    run = load(run_dir)
    found = document(run, summarize(run.records), run_dir / "plots", run_dir)
    return markdown(found), page(found)


def test_a_run_without_the_gil_experiment_has_no_gil_section(tmp_path):
    """A quick, plaintext-only run: plaintext belongs to the gil experiment, which compares whole runs."""
    report, html = pages(trimmed_run(tmp_path, {"plaintext"}))
    assert "## plaintext" in report and "Experiment:" not in report and "gil" not in report.lower()
    assert 'id="plaintext"' in html and "Experiment:" not in html
    three = pages(trimmed_run(tmp_path, {"plaintext", "sleep-5", "cpu-200"}))[0]  # all of gil's workloads
    assert "## Experiment: blocking-handler" in three and "Experiment: gil" not in three


def test_the_html_page_holds_what_report_md_holds_with_badges_that_give_their_reasons():
    report, html = pages(PUBLISHED)
    # The same generated paragraph in both (inline Markdown turned into tags).
    verdict = next(line for line in report.splitlines() if line.startswith("**plaintext**:"))
    assert str(inline(verdict)) in html
    # The bad repeat behind epoll's long error bar at 5,000 idle connections, said in both.
    evidence = "epoll @ 32 (repeat 3: 32 wrk errors (32 timeout), 16,101 requests/s, server CPU 9% busy)"
    assert evidence in report and evidence in html
    assert re.search(r'<span class="badge errors" title="wrk counted errors[^"]*: repeat 3: 32 wrk errors', html)
    assert re.search(r'<span class="badge client-bound" title="wrk used ≥90% of its CPU[^"]*: 3 of 3 repeats"', html)
    assert re.search(r'<span class="badge unsupported" title="[^"]*: the floor reference answers only', html)
    assert html.count('<table class="sortable">') >= 14 * 4 and "<script>" in html and "://" not in html
    for svg in re.findall(r'<img src="([^"]+)"', html):  # every plot the page shows is there, as SVG
        assert svg.endswith(".svg") and (PUBLISHED / svg).exists(), svg


def test_the_published_pages_are_what_the_code_writes():
    """results/reference-docker's committed report.md and report.html are current (redraw: bench plot DIR)."""
    for run_dir in (PUBLISHED, PUBLISHED / "profile"):
        report, html = pages(run_dir)
        assert (run_dir / "report.md").read_text() == report, f"python3 -m bench plot {run_dir}"
        assert (run_dir / "report.html").read_text() == html, f"python3 -m bench plot {run_dir}"
    html = (PUBLISHED / "profile" / "report.html").read_text()
    assert html.count('<figure class="flame">') == 13 and 'src="flamegraphs/plaintext-select-vs-epoll.svg"' in html


def test_latency_histograms_kept_by_a_run_over_several_clients_are_drawn(tmp_path):
    from bench.analysis import plots
    run_dir = trimmed_run(tmp_path, {"plaintext"})
    (run_dir / WRK_DIR).mkdir()
    kept = [parse((WRK_DATA / f"{name}.out").read_text()) for name in ("epoll-c8", "epoll-c64")]  # run together
    for index, report in enumerate(kept, 1):
        (run_dir / WRK_DIR / f"plaintext-epoll-c256-r1-client{index}.json").write_text(
            json.dumps({"engine": f"engine-{index}", **asdict(report)}))
    records = load(run_dir).records
    assert plots.draw_histograms(records, run_dir, run_dir / "plots") == [run_dir / "plots" / "plaintext-histogram.png"]
    assert "<text" in (run_dir / "plots" / "plaintext-histogram.svg").read_text()  # text as text: searchable
    report, html = pages(run_dir)
    assert "![plaintext histogram](plots/plaintext-histogram.png)" in report
    assert '<img src="plots/plaintext-histogram.svg"' in html
    (merged,) = plots.histograms(records, run_dir, "plaintext").values()  # epoll's, both clients summed
    assert sum(count for _, count in merged) == sum(count for report in kept for _, count in report.histogram)


def test_the_idle_axis_spreads_0_1000_5000_and_10000_apart(tmp_path):
    from bench.analysis import plots
    from bench.analysis.metrics import METRICS
    cells = [c for c in summarize(load(PUBLISHED).records) if c.workload.startswith("idle-") and c.connections == 32]
    points = [replace(c, connections=int(c.workload.split("-")[1])) for c in cells]
    path = tmp_path / "idle.png"
    plots.draw("idle", points, [METRICS["requests_per_s"]], path, x_label="idle connections")
    svg = path.with_suffix(".svg").read_text()
    ticks = {}
    for label in ("0", "1,000", "5,000", "10,000", "100,000"):  # the x axis' labels come first (text as text)
        ticks[label] = float(re.search(rf'<text [^>]*\bx="([\d.]+)"[^>]*>{label}</text>', svg).group(1))
    positions = list(ticks.values())
    assert positions == sorted(positions)
    assert min(b - a for a, b in zip(positions, positions[1:], strict=False)) > 30, ticks  # pixels apart


def test_plot_on_a_folder_that_merely_holds_runs_points_at_bench_index(tmp_path):
    for name in ("one", "two"):
        shutil.copytree(ROOT / "results" / "2026-12-01" / "runners-process", tmp_path / name,
                        ignore=shutil.ignore_patterns("plots"))
    with pytest.raises(BenchError, match=re.escape(f"python3 -m bench index {tmp_path} lists the runs under it")):
        write_gil_report(tmp_path)
    done = subprocess.run([sys.executable, "-m", "bench", "plot", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "holds no run" in done.stderr and "bench index" in done.stderr
    assert not list(tmp_path.glob("report.*"))


def test_the_index_lists_every_run_with_a_link_and_compare_writes_a_page(tmp_path, capsys):
    from bench.cli import main
    for name in ("runners-process", "runners-docker"):
        shutil.copytree(ROOT / "results" / "2026-12-01" / name, tmp_path / "2026-12-01" / name,
                        ignore=shutil.ignore_patterns("plots"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{")  # skipped, not fatal
    assert main(["index", str(tmp_path)]) == 0
    index = (tmp_path / "index.html").read_text()
    assert index.index("2026-12-01/runners-docker") < index.index("2026-12-01/runners-process")  # newest first
    assert '<a href="2026-12-01/runners-process/report.md">2026-12-01/runners-process</a>' in index
    assert "<td class=\"l\">quick</td>" in index and "<td class=\"l\">docker</td>" in index
    a, b = tmp_path / "2026-12-01" / "runners-process", tmp_path / "2026-12-01" / "runners-docker"
    assert main(["compare", str(a), str(b), "--html"]) == 0
    page = (tmp_path / "2026-12-01" / "compare-runners-process-vs-runners-docker.html").read_text()
    assert "ranges overlap in 44 of 48 cells (92%)" in page and "ranges overlap in 44 of 48" in capsys.readouterr().out
    assert '<a href="runners-process/report.md">' in page  # the runs' pages (not redrawn here), relative to it
    assert "wall time: A 468 s, B 484 s (B/A 1.03)" in page
    index = write_index(tmp_path).read_text()  # now with the comparison
    assert '<a href="2026-12-01/compare-runners-process-vs-runners-docker.html">' in index
