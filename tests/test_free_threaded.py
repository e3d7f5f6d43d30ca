"""The free-threaded image (swissknife-ft) against the real engine and namespaces, as root.

Builds both images first (seconds when cached; docker/build.sh --free-threaded).
Skipped, with the reason, when no Docker daemon answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

docker = pytest.importorskip("docker", reason="the Docker SDK for Python (`docker`) is not installed")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import verify, wrk  # noqa: E402
from bench.config import WORKLOADS  # noqa: E402
from bench.network import Namespaces  # noqa: E402
from bench.runners.docker import DockerRunner  # noqa: E402
from netns.config import Topology  # noqa: E402
from tests.test_docker_runner import CLIENT, netns_setup  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and the Docker socket need root"),
    pytest.mark.skipif(not isinstance(CLIENT, docker.DockerClient),
                       reason=f"no Docker daemon answers ({CLIENT}); start one: sudo docker/install-engine.sh"),
]
LOAD_S = 6
WINDOW_S = 3.0  # the server's CPU is read over this middle part of the load


@pytest.fixture(scope="module", autouse=True)
def prepared():
    done = subprocess.run([str(ROOT / "docker" / "build.sh"), "--free-threaded"], capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    netns_setup("up")


def started(python: str, kind: str, cpus: tuple[int, ...]) -> tuple[DockerRunner, int]:
    topo = Topology()
    runner = DockerRunner(topo, server_cpus=cpus, client_cpu=1, python=python)
    runner.check()
    net = Namespaces(topo)
    port = net.free_port()
    runner.start_server(kind, topo.server_addr, port)
    problem = verify.wait_until_answering(net, port, runner.server_exit_code, 20)
    assert problem is None, f"{problem}: {runner.server_log()}"
    return runner, port


def test_the_free_threaded_interpreter_runs_the_servers_without_the_gil_in_their_container():
    runner, _ = started("free-threaded", "threaded", (0,))
    try:
        found, twin = runner.server_python(), DockerRunner(Topology(), (0,), 1, python="gil")
        twin.check()
        assert (found["free_threaded_build"], found["gil_enabled"]) == (True, False), found
        assert (twin.server_python()["free_threaded_build"], twin.server_python()["gil_enabled"]) == (False, True)
        assert found["version"] == twin.server_python()["version"] == runner.versions()["python"]
        assert "kind=threaded" in runner.server_log() and "gil=off" in runner.server_log()
        assert runner._server.image.tags == ["swissknife-ft:latest"]
    finally:
        runner.stop()


def cpus_used(python: str) -> float:
    """CPUs' worth the threaded server used under /cpu/200 load when given CPUs 0-1 (its processes' CPU times)."""
    runner, port = started(python, "threaded", (0, 1))
    try:
        args = wrk.command(wrk.url(runner.topo.server_addr, port, "/cpu/200"), WORKLOADS["cpu-200"], 8, LOAD_S, 1, 2)
        with ThreadPoolExecutor(max_workers=1) as pool:
            load = pool.submit(runner.run_wrk, args, LOAD_S + 15)
            time.sleep((LOAD_S - WINDOW_S) / 2 + 1)  # the wrk container is up and loading
            before, t0 = runner.server_usage(), time.monotonic()
            time.sleep(WINDOW_S)
            after, t1 = runner.server_usage(), time.monotonic()
            (run,) = load.result()  # one client: this host's
            assert run.returncode == 0
        return (after.cpu_user_s + after.cpu_sys_s - before.cpu_user_s - before.cpu_sys_s) / (t1 - t0)
    finally:
        runner.stop()


def test_threads_use_the_second_cpu_on_a_cpu_bound_handler_only_without_the_gil():
    without, with_gil = cpus_used("free-threaded"), cpus_used("gil")
    assert without > 1.3, f"free-threaded: {without:.2f} CPUs"
    assert with_gil < 1.15, f"GIL build: {with_gil:.2f} CPUs"


def test_a_docker_sweep_on_the_free_threaded_interpreter_records_it_and_io_uring_as_unsupported(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "bench", "--runner", "docker", "--server-python", "free-threaded",
                           "--servers", "io-uring", "threaded", "--preset", "smoke", "--connections", "4",
                           "--repeat", "1", "--duration", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads((out / "results.json").read_text())
    assert document["environment"]["server_python"]["gil_enabled"] is False
    statuses = {r["server"]: (r["status"], r["failure"]) for r in document["records"]}
    assert statuses["threaded"] == ("ok", None)
    status, reason = statuses["io-uring"]
    assert status == "unsupported" and "abi3" in reason and "free-threaded" in reason, reason
    assert "GIL disabled" in (out / "report.md").read_text()


def test_bench_gil_runs_four_combinations_and_compares_them(tmp_path):
    out = tmp_path / "gil"
    done = subprocess.run([sys.executable, "-m", "bench", "gil", "--runner", "docker", "--servers", "threaded",
                           "--connections", "8", "--repeat", "1", "--duration", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = sorted(p.parent.name for p in out.glob("*/results.json"))
    assert runs == ["free-threaded-1cpu", "free-threaded-2cpu", "gil-1cpu", "gil-2cpu"]
    gil_states = {name: json.loads((out / name / "results.json").read_text())["environment"]["server_python"]
                  ["gil_enabled"] for name in runs}
    assert gil_states == {"free-threaded-1cpu": False, "free-threaded-2cpu": False, "gil-1cpu": True,
                          "gil-2cpu": True}
    report = (out / "report.md").read_text()
    for workload in ("plaintext", "sleep-5", "cpu-200"):
        assert f"## gil: {workload} at 8 connections" in report
    assert report.count("**threaded** without the GIL: on 1 CPU ×") == 3
    assert "Going from 1 to 2 CPUs multiplies its throughput by" in report
    assert "| threaded | no GIL, 2 CPUs |" in report
