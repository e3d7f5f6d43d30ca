"""Open-loop points: the refusals of --rates and --mix before anything runs, the plan, and the flags on
reports recorded from real openloop runs.

tests/unit/data/openloop/overload.out: openloop at 3,000 requests/s, 8 connections, 3 s, routes 97:/ and
3:/sleep/20 (seed 3) against a loopback `python3 -m servers epoll` (one loop: 90 sleeps of 20 ms a second
are more than it has, the backlog grows). stall-c2.out: see test_openloop_merge.py (a stall, no backlog).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from bench import loadgen, openloop
from bench.config import WORKLOADS, Rate, SweepConfig, plan
from bench.lifecycle import plan_digest, stored_config
from bench.limits import HostLimits, unsupported
from bench.results import Record
from tests.unit.test_cli_usage import bench_here

DATA = Path(__file__).with_name("data") / "openloop"


def recorded(name: str) -> loadgen.Report:
    return loadgen.parse((DATA / f"{name}.out").read_text())


@pytest.mark.parametrize("rates, says", [
    (["-5"], "must be positive"), (["0"], "must be positive"), (["fast"], "takes numbers"),
    (["nan"], "must be positive"), (["3"], "write 3.0 for 3× the closed-loop peak"),
])
def test_bad_rates_are_refused_saying_what_to_write(capsys, rates, says):
    code, output = bench_here(capsys, "--experiments", "latency", "--rates", *rates)
    assert code == 2 and says in output and "requests/s" in output and len(output.splitlines()[-1]) > 40


def test_rates_without_an_open_loop_workload_are_refused(capsys):
    code, output = bench_here(capsys, "--workloads", "plaintext", "--rates", "0.5")
    assert code == 2 and "--experiments latency" in output


@pytest.mark.parametrize("mix, says", [
    (["99:/", "2:/sleep/20"], "sum to 100, not 101"), (["99:/", "1:/nosuch"], "/nosuch is no route"),
    (["100:/sleep/x"], "is no route"), (["half:/"], "PERCENT:PATH"), (["100"], "PERCENT:PATH"),
])
def test_bad_mixes_are_refused_saying_what_to_write(capsys, mix, says):
    code, output = bench_here(capsys, "--mix", *mix)
    assert code == 2 and says in output and "/sleep/20" in output


def test_rates_read_as_absolute_or_fractions():
    assert openloop.parse_rates(["0.1", "1.05", "50000", "2xpeak"]) == (
        Rate(0.1, True), Rate(1.05, True), Rate(50000, False), Rate(2, True))


def test_an_open_loop_workload_measures_its_peak_first_then_each_rate():
    config = SweepConfig("x", ("epoll",), (WORKLOADS["latency-plaintext"], WORKLOADS["plaintext"]), (8,), 1, 1, 1,
                         rates=(Rate(0.5, True), Rate(2000)))
    assert [(p.workload.name, p.connections, p.rate) for p in plan(config)] == [
        ("latency-plaintext", 32, None), ("latency-plaintext", 32, Rate(0.5, True)),
        ("latency-plaintext", 32, Rate(2000)), ("plaintext", 8, None)]


def test_a_growing_backlog_is_flagged_overloaded_and_a_stall_is_not():
    growth, overloaded = openloop.overloaded(recorded("overload"))
    assert overloaded and growth > 2
    assert openloop.overloaded(recorded("stall-c2")) == (pytest.approx(0, abs=0.01), False)


def test_the_generator_is_flagged_when_it_falls_behind_or_saturates_its_cpu():
    report = recorded("stall-c2")
    def bound(offered: float, share: float) -> bool:
        return openloop.open_figures(report, offered, None, share)["generator_bound"]
    assert not bound(report.rate, 0.3)
    assert bound(report.rate / 0.98, 0.3)  # it sent 98 % of what was asked
    assert bound(report.rate, 0.9)


def test_a_mix_has_per_route_figures_and_a_single_route_none():
    figures = openloop.open_figures(recorded("overload"), 3000, None, 0.2)
    slow = figures["classes"]["/sleep/20"]
    assert slow["weight"] == 3 and slow["latency_p99_us"] >= 20_000
    assert sum(c["requests"] for c in figures["classes"].values()) == 9000
    assert figures["latency_p99_99_us"] >= figures["latency_p99_us"] >= figures["latency_uncorrected_p99_us"]
    assert openloop.open_figures(loadgen.merge([recorded("overload")]), 3000, None, 0.2)["classes"] is not None


def test_a_resume_tells_the_rates_apart_and_gets_the_config_back():
    mix = openloop.mix_workload(((99.0, "/"), (1.0, "/sleep/20")), (32,))
    config = SweepConfig("full", ("epoll",), (WORKLOADS["latency-plaintext"], mix), (16,), 2, 1, 1,
                         rates=(Rate(0.5, True), Rate(2000)))
    points = plan(config)
    assert len({p.key for p in points}) == len(points) == 6
    assert points[0].key == ("epoll", "latency-plaintext", 32, 1)  # the peak's, as a closed-loop point's
    record = Record("epoll", "latency-plaintext", 32, 1, "ok", rate_asked="2000/s")
    assert record.key == points[2].key
    document = json.loads(json.dumps(asdict(config)))
    assert stored_config(document) == config
    assert plan_digest(replace(config, rates=(Rate(0.5, True), Rate(3000)))) != plan_digest(config)


def test_a_mix_is_unsupported_where_the_description_lacks_one_of_its_routes():
    limits = HostLimits(open_files=20_000, threads=30_000, threads_because="test")
    point = plan(SweepConfig("full", ("floor", "epoll"), (WORKLOADS["latency-mix-sleep"],), (16,), 2, 1, 1))
    reasons = {p.server: unsupported(p, limits) for p in point}
    assert "not /sleep/MS" in reasons["floor"] and reasons["epoll"] is None
