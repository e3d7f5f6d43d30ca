"""The default `quick` preset is the lesson in at most 5 minutes: its points, its estimated wall time, and the
README's quoted duration checked against the results file it cites (pure; `python3 -m servers --list` only)."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from bench.analysis.report import method_line
from bench.cli import resolve, sweep_parser
from bench.config import PRESETS, Point, SweepConfig, estimated_s, plan
from bench.results import Run, load
from bench.sweep import HostLimits, unsupported

ROOT = Path(__file__).resolve().parents[2]
LIMITS = HostLimits(open_files=20_000, threads=30_000, threads_because="kernel.pid_max = 32,768")
MODELS = ("blocking", "threaded", "select", "poll", "epoll", "epoll-et", "epoll-pool", "asyncio", "reuseport",
          "io-uring")
BUDGET_S = 300


def config(*args: str) -> SweepConfig:
    parser = sweep_parser()
    return resolve(parser.parse_args(list(args)), parser)


def runs(point: Point) -> bool:
    return unsupported(point, LIMITS) is None


def wall_s(run_dir: Path) -> float:
    run = load(run_dir)
    return (datetime.fromisoformat(run.finished_at) - datetime.fromisoformat(run.started_at)).total_seconds()


def test_quick_is_every_model_and_reference_on_the_issue_s_points():
    quick = config()
    assert quick.preset == "quick" and set(quick.servers) == {*MODELS, "floor", "nginx"}
    points = {(p.server, p.workload.name, p.connections, p.repeat) for p in plan(quick)}
    expected = {(s, w, n, r) for s in quick.servers for w, counts, repeats in (
        ("plaintext", (16, 256), (1, 2)), ("idle-1000", (32,), (1,)), ("idle-10000", (32,), (1,)),
        ("sleep-5", (256,), (1,)), ("churn", (16,), (1,))) for n in counts for r in repeats}
    assert points == expected and len(plan(quick)) == len(expected)
    assert {w.name: w.idle for w in quick.workloads if w.idle} == {"idle-1000": 1_000, "idle-10000": 10_000}
    # select is recorded unsupported past FD_SETSIZE, with the reason, beside both idle sets.
    for point in plan(quick):
        if point.server == "select" and point.workload.idle:
            assert "FD_SETSIZE (1024)" in unsupported(point, LIMITS)


def test_quick_fits_five_minutes_by_an_estimate_that_matches_a_measured_run():
    quick = config()
    assert estimated_s(quick, runs) <= 0.9 * BUDGET_S  # a margin for a busier host
    # The estimate of the old quick sweep (now `plaintext`) against that sweep's measured wall time.
    old = config("--preset", "plaintext")
    assert PRESETS["plaintext"].connections == (4, 32, 128, 512) and old.repeat == 3
    assert abs(estimated_s(old, runs) / wall_s(ROOT / "results" / "2026-12-01" / "runners-docker") - 1) < 0.05


def test_the_report_states_the_preset_s_own_repeats_and_durations():
    run = Run("quick", "complete", "now", {}, asdict(config()))
    assert ("Preset `quick`: 2 repeat(s) of 1 s per point (1 repeat(s) for idle-1000, idle-10000, sleep-5, churn; "
            "2 s for sleep-5: the preset's choice,") in method_line(run)
    plaintext = Run("plaintext", "complete", "now", {}, asdict(config("--preset", "plaintext")))
    assert "3 repeat(s) of 2 s per point after a 1 s warm-up" in method_line(plaintext)


def test_the_options_override_the_preset_s_own_counts_and_repeats():
    by_name = {w.name: w for w in config("--connections", "8").workloads}
    assert by_name["sleep-5"].connections is None and by_name["idle-1000"].connections == (32,)
    assert {w.repeat for w in config("--repeat", "3").workloads} == {None}
    assert {w.duration_s for w in config("--duration", "3").workloads} == {None}
    sleep = {w.name: w for w in config().workloads}["sleep-5"]
    assert (sleep.repeat, sleep.duration_s) == (1, 2)  # a 1 s run after the warm-up's queued handlers sees nothing
    # Idle connections are held from one host: with other machines' engines the preset runs without them.
    engines = config("--server-engine", "ctx-a", "--client-engine", "ctx-b", "--server-addr", "192.0.2.1")
    assert [w.name for w in engines.workloads] == ["plaintext", "sleep-5", "churn"]


def test_the_readme_quotes_the_quick_sweep_s_measured_time_from_its_results_file():
    text = (ROOT / "README.md").read_text()
    quickstart = " ".join(text[text.index("## Quickstart"):text.index("## Usage")].split())
    found = re.search(r"took (\d+) s \(([\d.]+) min\) in \[`(results/[^`]+)/`\]\S* \(([^)]*)\)", quickstart)
    assert found, "the quickstart quotes the quick sweep's time and its results directory"
    seconds, minutes, run_dir, about = int(found[1]), float(found[2]), ROOT / found[3], found[4]
    run = load(run_dir)
    assert run.config["preset"] == "quick" and run.config["runner"] in about
    assert seconds == round(wall_s(run_dir)) and minutes == round(wall_s(run_dir) / 60, 1)
    if flagged := re.search(r"(\d+) of its (\d+) measured points are flagged disturbed", about):
        ok = [r for r in run.records if r.status == "ok"]
        assert (int(flagged[1]), int(flagged[2])) == (sum(r.disturbed for r in ok), len(ok))
