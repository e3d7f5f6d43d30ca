"""The benchmark pipeline end to end: real namespaces, real servers, real wrk and nginx, as root."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest
from standing import standing

from bench import procfs, subjects
from bench.config import WORKLOADS, SweepConfig
from bench.errors import BenchError
from bench.lifecycle import check_topology
from bench.network import Namespaces
from bench.results import Record, schema
from bench.runners import ProcessRunner
from bench.sweep import run_sweep
from netns.config import Topology

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("topology")  # skips without root


def bench(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()  # a hung bench must not outlive the test
        raise
    return process.returncode, output


# --- processes, as /proc shows them -----------------------------------------------------------

def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every live descendant of `root`."""
    found = {}
    for process in procfs.process_tree(root)[1:]:
        try:
            found[process.pid] = Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def wait_for_descendant(root: int, needle: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, command in descendants(root).items():
            if needle in command:
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no descendant running {needle!r} within {timeout} s")


# --- a smoke sweep and everything made from it --------------------------------------------------

@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke") / "run"
    code, output = finish(bench("--profile", "smoke", "--servers", "epoll", "blocking", "--remeasure", "0",
                                "--connections", "4", "16", "--repeat", "2", "--out", str(out)))
    assert code == 0, output
    return out


def test_smoke_sweep_writes_every_output(smoke_run):
    plots = {p.name for p in (smoke_run / "plots").iterdir()}
    # Each figure twice: a PNG for report.md, an SVG for report.html.
    assert plots == {f"plaintext-{figure}.{kind}" for figure in ("requests", "latency", "cpu", "load")
                     for kind in ("png", "svg")}
    assert all((smoke_run / "plots" / name).stat().st_size > 10_000 for name in plots)
    report = (smoke_run / "report.md").read_text()
    assert "**plaintext**: " in report and "had the highest throughput" in report
    for name in ("epoll", "blocking", "floor", "nginx", "plots/plaintext-requests.png"):
        assert name in report


def test_results_match_schema_and_csv(smoke_run):
    document = json.loads((smoke_run / "results.json").read_text())
    jsonschema.validate(document, schema())
    assert document["status"] == "complete"
    assert document["environment"]["tools"]["nginx"].startswith("nginx/")
    assert document["environment"]["client_sysctls"]["net.ipv4.tcp_tw_reuse"] == "1"
    rows = list(csv.DictReader((smoke_run / "results.csv").open()))
    assert len(rows) == len(document["records"])
    assert len(standing(document)) == 4 * 2 * 2  # servers (2 + the references) x connections x repeats
    assert list(rows[0]) == [f.name for f in fields(Record)]


def test_every_point_is_measured_and_crossed_the_veth(smoke_run):
    records = json.loads((smoke_run / "results.json").read_text())["records"]  # replaced attempts too
    assert {r["server"] for r in records} == {"epoll", "blocking", "floor", "nginx"}
    for r in records:
        point = f"{r['server']}@{r['connections']}#{r['repeat']}"
        assert r["status"] == "ok", point
        assert r["requests"] > 0 and r["requests_per_s"] > 0, point
        assert r["cpu_us_per_request"] > 0 and r["server_cpu_user_s"] + r["server_cpu_sys_s"] > 0, point
        assert r["server_peak_rss_kib"] > 0 and r["client_cpu_s"] > 0, point
        # every byte wrk read left the server through swissknife0, plus IPv6/TCP headers
        assert r["veth_tx_bytes"] >= r["bytes"] > 0 and r["veth_consistent"], point
        assert r["veth_rx_packets"] > 0 and r["veth_tx_per_wrk_byte"] >= 1, point
    nginx = [r for r in records if r["server"] == "nginx"]
    assert all(r["server_processes"] == 2 for r in nginx)  # master + worker, both counted


def test_plot_redraws_from_results_json_alone(smoke_run):
    before = {p.name: p.read_bytes() for p in (smoke_run / "plots").iterdir()}
    report = (smoke_run / "report.md").read_text()
    for path in (smoke_run / "plots").iterdir():
        path.unlink()
    (smoke_run / "report.md").unlink()
    code, output = finish(bench("plot", str(smoke_run)))
    assert code == 0, output
    assert {p.name: p.read_bytes() for p in (smoke_run / "plots").iterdir()} == before
    assert (smoke_run / "report.md").read_text() == report


def test_compare_prints_per_point_ratios(smoke_run):
    code, output = finish(bench("compare", str(smoke_run), str(smoke_run)))
    assert code == 0, output
    assert output.count("1.00") >= 3 * 2 * 4  # every cell, every metric: a run against itself


# --- faults ------------------------------------------------------------------------------------

def test_killed_server_fails_its_point_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "run"
    sweep = bench("--preset", "plaintext", "--servers", "epoll", "--connections", "4", "8", "--duration", "1",
                  "--repeat", "2", "--remeasure", "0", "--out", str(out))
    server = wait_for_descendant(sweep.pid, "-m servers epoll")
    wait_for_descendant(sweep.pid, "wrk ")  # killed under load
    os.kill(server, signal.SIGKILL)
    code, output = finish(sweep)
    assert code == 1, output  # finished, with a failed point
    document = json.loads((out / "results.json").read_text())
    assert document["status"] == "complete"
    epoll = [r for r in standing(document) if r["server"] == "epoll"]
    assert epoll[0]["status"] == "failed" and "exited with code -9" in epoll[0]["failure"]
    assert all(r["status"] == "ok" and r["requests"] > 0 for r in epoll[1:])  # restarted
    assert len(standing(document)) == 3 * 2 * 2  # epoll and the references x connections x repeats


def test_a_holder_failing_at_start_fails_its_points_and_the_sweep_finishes_with_its_report(tmp_path):
    """Under a 1,024 open-file limit a holder refuses 1,500 connections: that server start fails, not the sweep.
    (epoll and the floor, one process each, cannot hold them under that limit either: their points are
    unsupported, not run.)"""
    out = tmp_path / "run"
    sweep = subprocess.Popen(["prlimit", "--nofile=1024:1024", sys.executable, "-m", "bench", "--servers", "epoll",
                              "--workloads", "idle-1500", "plaintext", "--connections", "4", "--duration", "1",
                              "--repeat", "2", "--remeasure", "0", "--out", str(out)],
                             cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    code, output = finish(sweep)
    assert code == 1, output  # finished, with failed points
    document = json.loads((out / "results.json").read_text())
    assert document["status"] == "complete" and (out / "report.md").exists()
    by_workload = {w: [r for r in document["records"] if r["workload"] == w] for w in ("idle-1500", "plaintext")}
    assert len(by_workload["idle-1500"]) == 3 * 2 and len(by_workload["plaintext"]) == 3 * 2
    for record in by_workload["idle-1500"]:
        if record["server"] in ("epoll", "floor"):
            assert record["status"] == "unsupported" and "one process may open 1,024 files" in record["failure"]
            continue
        assert record["status"] == "failed", record
        assert "server start failed: an idle-connection holder exited with code 2" in record["failure"], record
    assert all(r["status"] == "ok" and r["requests"] > 0 for r in by_workload["plaintext"])
    assert "idle-connection holder exited" in (out / "report.md").read_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_everything_and_keeps_valid_results(tmp_path, signum):
    out = tmp_path / "run"
    sweep = bench("--preset", "plaintext", "--servers", "epoll", "--connections", "4", "--duration", "2",
                  "--repeat", "5", "--out", str(out))
    seen: dict[int, str] = {}
    sessions: set[int] = set()

    def look() -> None:
        """The descendants now, and the sessions bench gave its servers and wrk runs (read while they live: a wrk
        run is gone by the time its point is written)."""
        now = descendants(sweep.pid)
        seen.update(now)
        sessions.update(found.session for pid in now if (found := procfs.stat_or_none(pid)))
        sessions.discard(os.getsid(0))  # ours, which bench itself shares

    deadline = time.monotonic() + 60
    while not (out / "results.json").exists() or not json.loads((out / "results.json").read_text())["records"]:
        assert time.monotonic() < deadline and sweep.poll() is None, "no point finished"
        look()
        time.sleep(0.05)
    look()
    assert any("-m servers epoll" in c for c in seen.values())
    assert sessions
    sweep.send_signal(signum)
    code, output = finish(sweep, timeout=30)
    assert code == 128 + signum, output
    alive = {pid for pid in seen if (found := procfs.stat_or_none(pid)) and found.state != "Z"}
    in_our_sessions = [e for e in filter(str.isdigit, os.listdir("/proc"))  # zombies hold nothing: not counted
                       if (found := procfs.stat_or_none(int(e))) and found.session in sessions and found.state != "Z"]
    assert not alive and not in_our_sessions, (alive, in_our_sessions)
    document = json.loads((out / "results.json").read_text())
    jsonschema.validate(document, schema())
    assert document["status"] == "interrupted" and document["records"][0]["status"] == "ok"


# Python's http.server as a subject: a real server that answers / with a directory listing.
WRONG = subjects.Subject(
    "wrong", "user", "http.server, answering wrongly",
    (sys.executable, "-m", "http.server", "--bind", "{host}", "--directory", "{scratch}", "{port}"), ("/", "/bytes/N"))


@pytest.mark.parametrize("server", ["reuseport", "nginx"])
def test_a_bench_killed_outright_takes_its_servers_and_wrk_with_it(tmp_path, server):
    """SIGKILL (no clean-up runs): the parent-death signal ends the server (and so its worker processes)
    and wrk; nothing bench started outlives it."""
    process = bench("--profile", "smoke", "--servers", server, "--connections", "4", "--duration", "3",
                    "--repeat", "3", "--out", str(tmp_path / "run"), start_new_session=True)
    try:
        wait_for_descendant(process.pid, "wrk ")
        started = descendants(process.pid)
        assert len(started) >= 3, started  # the server, its worker(s), wrk (taskset execs each)
        process.kill()
        process.wait()
        deadline = time.monotonic() + 15
        while alive := {pid: command for pid, command in started.items() if procfs.stat_or_none(pid)}:
            assert time.monotonic() < deadline, f"left running after bench was killed: {alive}"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_a_server_answering_wrongly_fails_verification_and_is_not_benchmarked():
    config = SweepConfig(preset="test", servers=("wrong",), workloads=(WORKLOADS["bytes-64k"],),
                         connections=(4, 8), duration_s=1, warmup_s=1, repeat=1)
    records: list[Record] = []
    subjects.REGISTRY.add(WRONG)
    runner = ProcessRunner(Topology(), server_cpus=(0,), client_cpu=1)
    started = time.monotonic()
    run_sweep(config, runner, Namespaces(Topology()), records.append)
    assert time.monotonic() - started < 5  # no wrk run
    assert [r.status for r in records] == ["failed", "failed"]
    failure = records[0].failure
    assert failure.startswith("verification failed") and "Content-Type" in failure, failure
    assert "/bytes/65536: status 404" in failure, failure
    assert all(r.requests is None for r in records)
    assert runner.server_exit_code() is None  # stopped, nothing left running


def test_missing_topology_names_the_command_that_creates_it():
    with pytest.raises(BenchError, match=r"run: sudo python3 netns/setup.py up"):
        check_topology(Topology(server_ns="sk-absent-a", client_ns="sk-absent-b"))


def test_a_missing_tool_is_named_with_its_package():
    code, output = finish(bench("--profile", "smoke", env=os.environ | {"PATH": "/nonexistent"}))
    assert code == 2 and "wrk is not installed: apt-get install wrk" in output, output


def test_pipelining_and_churn_change_what_crosses_the_veth():
    config = SweepConfig(preset="test", servers=("epoll",),
                         workloads=(WORKLOADS["plaintext"], WORKLOADS["pipeline-16"], WORKLOADS["churn"]),
                         connections=(8,), duration_s=1, warmup_s=1, repeat=1, remeasure=0)
    records: list[Record] = []
    run_sweep(config, ProcessRunner(Topology(), server_cpus=(0,), client_cpu=1), Namespaces(Topology()),
              records.append)
    assert [r.status for r in records] == ["ok"] * 3, [r.failure for r in records]
    plain, pipelined, churn = (r.veth_rx_packets / r.requests for r in records)
    # 16 requests per write: far fewer client packets per request than one request per write (≈ 1/8 here:
    # epoll answers a batch with one send, so the client ACKs once per batch; nginx writes each answer
    # apart, and its ACK count swings with load)
    assert pipelined < 0.4 * plain, (pipelined, plain)
    # a new connection per request: SYN, request, ACKs and FIN each time
    assert churn > 2 * plain, (churn, plain)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_server_cpu_range_pins_every_server_process_to_it(tmp_path):
    """--cpus 0-1,1: reuseport's processes may use both CPUs; shares are per pinned CPU; the report says so."""
    sweep = bench("--servers", "reuseport", "--cpus", "0-1,1", "--workloads", "cpu-200", "--connections", "4",
                  "--duration", "2", "--repeat", "1", "--remeasure", "0", "--out", str(tmp_path))
    try:
        server = wait_for_descendant(sweep.pid, "-m servers reuseport")  # not bench's own "--servers reuseport"
        wait_for_descendant(server, "-m servers reuseport")  # a forked worker: past taskset and start-up
        processes = [server, *descendants(server)]
        assert all(os.sched_getaffinity(pid) == {0, 1} for pid in processes), processes
    finally:
        code, output = finish(sweep)
    assert code == 0, output
    document = json.loads((tmp_path / "results.json").read_text())
    assert (document["config"]["server_cpus"], document["config"]["client_cpu"]) == ([0, 1], 1)
    assert "server on CPUs 0,1 (shared with wrk), wrk on CPU 1" in (tmp_path / "report.md").read_text()
    (record,) = [r for r in document["records"] if r["server"] == "reuseport"]  # nginx: unsupported on /cpu
    assert record["status"] == "ok" and 0 < record["server_cpu_share"] <= 1.05, record
