"""The open-loop analysis (bench/analysis/latency.py) on records built from recorded openloop runs."""

from __future__ import annotations

from pathlib import Path

from bench import loadgen, openloop
from bench.analysis import html, latency
from bench.analysis.document import Document, markdown
from bench.results import Record

DATA = Path(__file__).with_name("data") / "openloop"


def record(server: str, workload: str, asked: str, name: str, offered: float, **changes) -> Record:
    report = loadgen.parse((DATA / f"{name}.out").read_text())
    # The recorded run's own figures, at the offered rate and flags the test gives.
    figures = openloop.open_figures(report, offered, None, 0.2) | {"generator_bound": False} | changes
    return Record(server, workload, 32, 1, "ok", rate_asked=asked, requests_per_s=report.requests / 5,
                  cpu_us_per_request=10.0, **figures)


def test_capacity_is_the_highest_rate_that_held_the_slo_without_a_backlog():
    records = [
        record("epoll", "latency-plaintext", "500/s", "stall-c2", 500, latency_p99_us=800.0, overloaded=False),
        record("epoll", "latency-plaintext", "1000/s", "stall-c2", 1000, latency_p99_us=5_000.0, overloaded=False),
        record("epoll", "latency-plaintext", "2000/s", "stall-c2", 2000, latency_p99_us=900.0, overloaded=True),
        record("epoll", "latency-plaintext", "4000/s", "stall-c2", 4000, latency_p99_us=700.0, generator_bound=True),
    ]
    levels = latency.curves(latency.levels(records))[("latency-plaintext", 32)]["epoll"]
    assert [lv.offered for lv in levels] == [500, 1000, 2000, 4000]
    assert latency.capacity(levels, 1_000) == 500
    assert latency.capacity(levels, 10_000) == 1000


def test_the_report_section_and_curves_come_from_the_records(tmp_path):
    records = [record(server, workload, f"{r}/s", name, r)
               for server in ("epoll", "threaded") for r in (1000, 3000)
               for workload, name in (("latency-plaintext", "stall-c2"), ("latency-mix-sleep", "overload"))]
    found = Document("run", [], latency.sections(records, tmp_path / "plots", tmp_path))
    text = markdown(found)
    assert "## Latency under a constant rate" in text and "p99 ≤ 1 ms held up to" in text
    assert "Fast requests beside 1 % slow ones" in text and "latency-mix-sleep's 1 % slow requests" in text
    assert "| epoll | 3,000 (3000/s) |" in text
    assert "![latency-plaintext latency–load](plots/latency-plaintext-c32-latency-load.png)" in text
    page = html.page(found)  # the same sections in report.html, its figures as SVG, its tables sortable
    assert '<h2>Latency under a constant rate</h2>' in page and "p99 ≤ 1 ms held up to" in page
    assert 'src="plots/latency-plaintext-c32-latency-load.svg"' in page
    assert '<td class="r" data-value="3000">3,000 (3000/s)</td>' in page
    paths = latency.draw(records, tmp_path / "plots")
    assert [p.name for p in paths] == ["latency-plaintext-c32-latency-load.png",
                                       "latency-mix-sleep-c32-latency-load.png"]
    assert all(p.stat().st_size > 10_000 and p.with_suffix(".svg").exists() for p in paths)


def test_a_run_without_open_loop_points_has_no_section(tmp_path):
    assert latency.sections([Record("epoll", "plaintext", 32, 1, "ok")], tmp_path, tmp_path) == []
