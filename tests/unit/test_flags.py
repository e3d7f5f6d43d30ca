"""Integrity flags (bench/flags.py): each rule, the MAD outlier rule, superseded attempts out of the statistics,
the published stall flagged, resume's plan comparison (pure)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from bench import flags, wrk
from bench.analysis.summary import flag_counts, remeasured, summarize
from bench.cli import main
from bench.config import WORKLOADS, SweepConfig, plan
from bench.lifecycle import differences, plan_digest, stored_config
from bench.records import ClientRun, to_record
from bench.results import Record, Run, load
from bench.runners.base import ServerUsage

ROOT = Path(__file__).resolve().parents[2]
STEADY = [50_000] * 20  # bytes per 100 ms


def ok(repeat: int = 1, rps: float = 100_000.0, **figures) -> Record:
    values = dict(requests=int(rps * 2), duration_s=2.0, requests_per_s=rps, cpu_us_per_request=10.0,
                  errors_connect=0, errors_timeout=0, other_cpu_share=0.0, client_bound=False,
                  client_cpu_share=0.5, server_cpu_share=0.5) | figures
    return Record("epoll", "plaintext", 32, repeat, "ok", **values)


def found(record: Record) -> dict[str, str]:
    return flags.point_flags(record, duration_s=2, timeout_s=2)


def test_a_clean_run_has_no_flags():
    assert found(ok(interval_tx_bytes=STEADY)) == {}


def test_each_rule_names_its_flag_with_the_evidence():
    assert "0.35 CPUs" in found(ok(other_cpu_share=0.35))["disturbed"]
    assert "wrk used 97%" in found(ok(client_bound=True, client_cpu_share=0.97))["client_bound"]
    assert found(ok(errors_timeout=32))["timeouts"].startswith("32 requests timed out")
    assert found(ok(errors_connect=3))["connect_errors"].startswith("3 connections")
    assert set(found(ok(other_cpu_share=0.09, errors_timeout=0))) == set()  # under the threshold


def test_wrk_running_past_its_duration_is_a_stall():
    assert "wrk ran 22.2 s for a 2 s run" in found(ok(duration_s=22.2))["stalled"]
    assert "stalled" not in found(ok(duration_s=2.9))  # within the margin


def test_a_wall_clock_step_is_told_from_a_stall_and_the_rates_take_bench_s_clock():
    """The published 'stall': wrk said 22.2 s, but bench's 14 s wrk timeout never fired (it times monotonically)."""
    report = wrk.WrkReport(356_861, 22_200_000, 40_000_000, dict.fromkeys(("connect", "read", "write", "status"), 0)
                           | {"timeout": 32}, dict.fromkeys(("mean", "stdev", "max", *wrk.PERCENTILES), 100.0))
    usage = ServerUsage(10.0, 5.0, 1, 1, 1), ServerUsage(11.2, 5.8, 1, 1, 1)
    point = plan(SweepConfig("t", ("epoll",), (WORKLOADS["idle-5000"],), (32,), 2, 1, 1))[0]
    record = to_record(point, "now", [ClientRun(None, 1.9, report, 4.0, 0.0, 2.1)], *usage, None, 1)
    assert (record.wrk_runtime_s, record.duration_s) == (22.2, 2.1)
    assert record.requests_per_s == pytest.approx(356_861 / 2.1) and record.server_cpu_share == pytest.approx(1 / 1.05)
    found_flags = found(record)
    assert "clock_step" in found_flags and "stalled" not in found_flags and "timeouts" in found_flags
    assert "22.2 s by the wall clock, 2.1 s by bench's monotonic clock" in found_flags["clock_step"]
    assert "clock_step" in flags.REMEASURED_FOR


def test_throughput_collapsing_inside_a_run_is_a_stall_but_wrk_starting_is_not():
    stopped = [50_000] * 5 + [0] * 6 + [50_000] * 9
    assert "for 0.6 s" in found(ok(interval_tx_bytes=stopped))["stalled"]
    assert "stalled" not in found(ok(interval_tx_bytes=[0] * 8 + STEADY))  # the exec starting wrk
    assert "stalled" not in found(ok(interval_tx_bytes=[50_000] * 5 + [0] * 4 + [50_000] * 11))  # 0.4 s < STALL_S
    # After wrk's runtime (counted from its first traffic), the sampler only waits for the runner.
    assert "stalled" not in found(ok(interval_tx_bytes=STEADY + [0] * 10))


def test_mad_flags_the_published_stall_and_only_it():
    records = [ok(1, 200_042), ok(2, 197_169), ok(3, 16_101)]
    flags.mark_outliers(records)
    assert [r.flags for r in records] == [[], [], ["outlier"]]
    assert "median 197,169.0" in records[2].flag_details["outlier"]
    close = [ok(1, 100_000), ok(2, 101_000), ok(3, 80_000)]  # MAD 1,000, but within 25 % of the median
    flags.mark_outliers(close)
    assert [r.flags for r in close] == [[], [], []]
    two = [ok(1, 100_000), ok(2, 10_000)]  # two repeats: no majority to disagree with
    flags.mark_outliers(two)
    assert [r.flags for r in two] == [[], []]


def test_superseded_attempts_are_out_of_the_statistics_and_stalled_ones_out_of_the_spread():
    replaced = ok(1, 5_000, attempt=1, flags=["stalled"], superseded_by={"repeat": 1, "attempt": 2})
    again = ok(1, 100_000, attempt=2, flags=["remeasured"])
    stalled = ok(3, 20_000, flags=["stalled"])
    (cell,) = summarize([replaced, again, ok(2, 110_000), stalled])
    spread = cell.stats["requests_per_s"]
    assert (spread.median, spread.low, spread.high) == (100_000, 100_000, 110_000)  # median of the 3 standing
    assert cell.excluded["requests_per_s"] == [20_000] and cell.remeasured == 1
    assert cell.flags == {"remeasured": 1, "stalled": 1}
    assert flag_counts([replaced, again, stalled]) == {"stalled": 1, "remeasured": 1}
    assert remeasured([replaced, again]) == remeasured([replaced, again]).__class__(1, 1, 0)


def test_the_published_reference_stall_is_flagged_on_load():
    run = load(ROOT / "results" / "reference-docker")
    (stall,) = [r for r in run.records if r.key == ("epoll", "idle-5000", 32, 3)]
    assert stall.flags == ["stalled", "timeouts", "outlier"], stall.flag_details
    assert "wrk ran 22.2 s" in stall.flag_details["stalled"]


CONFIG = SweepConfig("quick", ("epoll", "floor"), (WORKLOADS["plaintext"], WORKLOADS["idle-1000"]), (4, 32), 2, 1, 3)


def run_of(config: SweepConfig) -> Run:
    return Run("r", "interrupted", "now", {"git_commit": "abc", "kernel": "6.18"}, asdict(config),
               plan_digest=plan_digest(config))


def test_resume_rebuilds_the_config_and_names_what_differs():
    run = run_of(CONFIG)
    assert stored_config(json.loads(json.dumps(run.config))) == CONFIG
    assert differences(run, CONFIG, {"git_commit": "abc", "kernel": "6.18"}) == []
    moved = differences(run, replace(CONFIG, repeat=4), {"git_commit": "abc", "kernel": "6.18"})
    assert len(moved) == 1 and moved[0].startswith("the plan differs")
    assert differences(run, CONFIG, {"git_commit": "def", "kernel": "6.18"}) == ["git_commit was 'abc', now 'def'"]


@pytest.mark.parametrize("command", [["plot"], ["compare", "{dir}"], ["resume"]])
def test_an_invalid_results_json_is_one_line_and_nothing_is_overwritten(tmp_path, capsys, command):
    (tmp_path / "results.json").write_text('{"records": [')
    argv = [command[0], *(part.format(dir=tmp_path) for part in command[1:]), str(tmp_path)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("bench: error: cannot read"), error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    assert (tmp_path / "results.json").read_text() == '{"records": ['
