"""Experiments that separate the models, run small: idle connections (few hundred), handler
workloads, large responses, pipelining, churn. Real namespaces, real wrk, real servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from standing import standing

from bench.config import EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("topology")  # skips without root


def sweep(out: Path, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench", "--duration", "1", "--repeat", "1", "--out", str(out),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]  # 1: some points failed
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def idle_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("idle") / "run"
    return out, sweep(out, "--servers", "select", "epoll", "--workloads", "idle-0", "idle-400", "idle-1100")


def records_of(results: dict, server: str, workload: str) -> list[dict]:
    return [r for r in standing(results) if r["server"] == server and r["workload"] == workload]


def test_the_holder_connections_are_held_and_counted_by_the_server(idle_run) -> None:
    _, results = idle_run
    for server in ("select", "epoll", "nginx"):
        (held,) = records_of(results, server, "idle-400")
        assert held["status"] == "ok", held["failure"]
        assert held["idle_held"] == 400 and held["idle_on_server"] == 400
        assert held["connections"] == 32 and held["requests"] > 0
        assert (held["idle_holders"], held["idle_sources"]) == (1, 1) and held["idle_open_s"] > 0
        assert held["idle_server_rss_kib"] > 0 and held["idle_server_kib_per_connection"] is not None
    (big,) = records_of(results, "epoll", "idle-1100")
    assert big["status"] == "ok" and big["idle_held"] == big["idle_on_server"] == 1100


def test_select_beyond_fd_setsize_is_unsupported_with_its_reason(idle_run) -> None:
    _, results = idle_run
    (select,) = records_of(results, "select", "idle-1100")
    assert select["status"] == "unsupported"
    assert "FD_SETSIZE (1024)" in select["failure"] and "1,100 idle + 32 active" in select["failure"]
    assert select["requests"] is None  # not run, and not a zero


def test_idle_report_section_quotes_numbers_from_the_results(idle_run) -> None:
    out, results = idle_run
    report = (out / "report.md").read_text()
    assert "## Experiment: idle-connections" in report
    first, last = records_of(results, "epoll", "idle-0")[0], records_of(results, "epoll", "idle-1100")[0]
    assert f"{first['requests_per_s']:,.0f} → {last['requests_per_s']:,.0f} requests/s" in report
    assert "select unsupported from 1,100 idle connections" in report
    for figure in ("requests", "latency", "cpu", "memory", "opening"):
        assert (out / "plots" / f"idle-connections-{figure}.png").stat().st_size > 0
    kib = records_of(results, "epoll", "idle-1100")[0]["idle_server_kib_per_connection"]
    assert "### server KiB per idle connection (resident set, all processes)" in report
    assert f"epoll {kib:,.2f} KiB at 1,100" in report


HANDLER_WORKLOADS = ("sleep-5", "cpu-200", "bytes-64k", "pipeline-16", "churn")


def test_every_workload_has_a_point_for_every_server(tmp_path) -> None:
    out = tmp_path / "run"
    results = sweep(out, "--servers", "threaded", "epoll", "--workloads", *HANDLER_WORKLOADS,
                    "--connections", "8")
    for workload in HANDLER_WORKLOADS:
        for server in ("threaded", "epoll", "nginx"):
            (record,) = records_of(results, server, workload)
            if server == "nginx" and workload in ("sleep-5", "cpu-200"):
                assert record["status"] == "unsupported" and "serves only" in record["failure"]
            else:
                assert record["status"] == "ok", (server, workload, record["failure"])
                assert record["requests"] > 0 and record["cpu_us_per_request"] > 0
    # A 5 ms blocking handler: one event loop serves at most ~200/s, a thread per connection ~8 x that.
    (threaded,) = records_of(results, "threaded", "sleep-5")
    (epoll,) = records_of(results, "epoll", "sleep-5")
    assert epoll["requests_per_s"] <= 200
    assert threaded["requests_per_s"] > 2 * epoll["requests_per_s"]
    (large,) = records_of(results, "epoll", "bytes-64k")
    assert large["bytes"] >= large["requests"] * 65536
    report = (out / "report.md").read_text()
    for experiment in ("blocking-handler", "cpu-handler", "large-responses", "churn"):
        assert f"## Experiment: {experiment}" in report
        assert f"*{EXPERIMENTS[experiment].question}*" in report
    assert f"threaded {threaded['requests_per_s']:,.0f}" in report


def test_experiments_option_selects_their_workloads(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--experiments", "nosuch"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown experiment(s) nosuch" in done.stderr and "idle-connections" in done.stderr
