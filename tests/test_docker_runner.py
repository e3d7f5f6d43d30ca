"""The docker runner against the real engine, image and namespaces, as root.

Skipped, with the reason, when no Docker daemon answers. The image is rebuilt
first (seconds when only the code changed) so the containers run this checkout.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

docker = pytest.importorskip("docker", reason="the Docker SDK for Python (`docker`) is not installed")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from standing import standing  # noqa: E402

from bench.errors import PointFailed  # noqa: E402
from bench.network import Namespaces  # noqa: E402
from bench.runners.docker import OWNER, OWNER_LABEL, ROLE_LABEL, RUN_LABEL, DockerRunner  # noqa: E402
from netns.config import Topology  # noqa: E402


def daemon() -> docker.DockerClient | Exception:
    try:
        client = docker.from_env()
        client.ping()
        return client
    except Exception as error:  # whatever stops us reaching the daemon means "skip"
        return error


CLIENT = daemon()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and the Docker socket need root"),
    pytest.mark.skipif(not isinstance(CLIENT, docker.DockerClient),
                       reason=f"no Docker daemon answers ({CLIENT}); start one: sudo docker/install-engine.sh"),
]


def build_image() -> None:
    done = subprocess.run([str(ROOT / "docker" / "build.sh")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr


def netns_setup(command: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "netns" / "setup.py"), command],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def ours(**filters: str) -> list:
    """Every container carrying our role label (and the given label filters)."""
    labels = [ROLE_LABEL, *(f"{key}={value}" for key, value in filters.items())]
    return CLIENT.containers.list(all=True, filters={"label": labels})


def leftover(run: str, owner: str = ""):
    """A server container as a bench leaves it when killed (or as a live bench has it): labelled, running."""
    return CLIENT.containers.run("swissknife:latest", ["sleep", "infinity"], detach=True,
                                 labels={ROLE_LABEL: "server", RUN_LABEL: run, OWNER_LABEL: owner})


def started_containers(since: float, until: float) -> dict[str, Counter]:
    """run label -> Counter of roles, over the containers of ours the engine started in [since, until]."""
    runs: dict[str, Counter] = {}
    for event in CLIENT.events(since=int(since), until=int(until) + 1, decode=True,
                               filters={"type": "container", "event": "start", "label": ROLE_LABEL}):
        if event["timeNano"] < since * 1e9:  # the engine filters by whole seconds: drop earlier tests' starts
            continue
        attributes = event["Actor"]["Attributes"]
        runs.setdefault(attributes[RUN_LABEL], Counter())[attributes[ROLE_LABEL]] += 1
    return runs


def sweep(out: Path, runner: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "--runner", runner, "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module", autouse=True)
def prepared():
    build_image()
    netns_setup("up")


def test_a_server_and_a_wrk_container_joined_pinned_and_removed():
    topo = Topology()
    runner = DockerRunner(topo, server_cpus=(0,), client_cpu=1)
    runner.check()
    port = Namespaces(topo).free_port()
    try:
        runner.start_server("nginx", topo.server_addr, port)
        (server,) = ours(**{RUN_LABEL: runner.run_id, ROLE_LABEL: "server"})
        host = server.attrs["HostConfig"]
        # SYS_ADMIN: nsenter (and perf); SYSLOG: perf's kernel symbols
        assert (host["CpusetCpus"], host["NetworkMode"], host["CapAdd"]) == ("0", "host", ["SYS_ADMIN", "SYSLOG"])
        assert not host["Privileged"] and host["SecurityOpt"] == ["no-new-privileges"]
        assert host["PidsLimit"] > 10_000 and host["Memory"] >= 2**30  # limits a sweep never reaches
        assert not server.labels["com.docker.compose.project"]  # compose must not take it for its own
        assert [(m["Source"], m["Propagation"]) for m in server.attrs["Mounts"]] == [("/run/netns", "rslave")]
        time.sleep(1)
        assert runner.server_exit_code() is None, runner.server_log()
        # The server (PID 1 and its worker) runs without SYS_ADMIN and SYSLOG; an exec beside it (perf's way
        # in) still has them.
        assert capabilities(server, "1") & (SYS_ADMIN | SYSLOG) == 0
        assert capabilities(server, "self") & (SYS_ADMIN | SYSLOG) == SYS_ADMIN | SYSLOG
        before = runner.server_usage()
        runs = [runner.run_wrk(["wrk", "-c4", "-d1s", f"http://[{topo.server_addr}]:{port}/"], timeout_s=10)[0]
                for _ in range(2)]
        after = runner.server_usage()
        for run in runs:
            assert run.returncode == 0 and "Requests/sec" in run.stdout, run.stdout + run.stderr
            assert "swissknife-cgroup-cpu" not in run.stderr
            # wrk's CPU from its container's cgroup: up to one busy second, less when other load takes its CPU
            assert 0.02 < run.cpu_s < 1.5
            assert run.engine_cpu_s >= 0 and run.host_busy_s >= run.cpu_s
        assert after.cpu_user_s + after.cpu_sys_s > before.cpu_user_s + before.cpu_sys_s
        assert after.processes == 2 and after.peak_rss_kib > 1000  # nginx master + worker
        # Both runs were execs in one wrk container, whose wrk ran without SYS_ADMIN.
        (wrk,) = ours(**{RUN_LABEL: runner.run_id, ROLE_LABEL: "wrk"})
        assert wrk.attrs["HostConfig"]["CpusetCpus"] == "1"
        [run] = runner.run_wrk(["sh", "-c", "grep CapEff /proc/self/status"], timeout_s=10)
        assert int(run.stdout.split()[1], 16) & SYS_ADMIN == 0, run.stdout
        # wrk's exit status and its own stderr, without docker/cgroup-cpu.sh's line.
        [run] = runner.run_wrk(["sh", "-c", "echo oops >&2; exit 3"], timeout_s=10)
        assert (run.returncode, run.stderr) == (3, "oops\n")
        # A hung wrk: killed at the deadline, its container removed.
        started = time.monotonic()
        with pytest.raises(PointFailed, match="killed"):
            runner.run_wrk(["sleep", "60"], timeout_s=2)
        assert time.monotonic() - started < 10
        assert [c.labels[ROLE_LABEL] for c in ours(**{RUN_LABEL: runner.run_id})] == ["server"]
        # The server's processes are read from the host's /proc (as the process runner reads its own):
        # killed there, the runner sees the container's exit and stops measuring.
        server.reload()
        os.kill(server.attrs["State"]["Pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while runner.server_exit_code() is None:
            assert time.monotonic() < deadline, "the killed server still counts as running"
            time.sleep(0.05)
        assert runner.server_exit_code() == 128 + signal.SIGKILL
        with pytest.raises(PointFailed, match="not running"):
            runner.server_usage()
    finally:
        runner.stop()
    assert ours(**{RUN_LABEL: runner.run_id}) == []


SYS_ADMIN, SYSLOG = 1 << 21, 1 << 34  # capability bits (linux/capability.h)


def capabilities(container, pid: str) -> int:
    """CapEff of process `pid` ("self": the exec itself) inside `container`."""
    code, out = container.exec_run(["grep", "CapEff", f"/proc/{pid}/status"])
    assert code == 0, out
    return int(out.split()[1], 16)


def test_a_live_bench_keeps_its_containers_a_dead_one_loses_them(capfd):
    kind, pid_namespace, pid, _start = OWNER.split(":")
    live = leftover("live-run", owner=OWNER)  # this test's process: alive
    dead = leftover("dead-run", owner=f"{kind}:{pid_namespace}:{pid}:0")  # a pid whose process is gone
    try:
        DockerRunner(Topology(), server_cpus=(0,), client_cpu=1).check()
        assert [c.id for c in ours(**{RUN_LABEL: "live-run"})] == [live.id]
        assert ours(**{RUN_LABEL: "dead-run"}) == []
        stderr = capfd.readouterr().err
        assert f"removing leftover server container {dead.short_id} of run dead-run" in stderr
        assert "another bench is running" in stderr and "live-run" in stderr
    finally:
        live.remove(force=True)


def test_smoke_sweep_one_server_container_per_server_one_wrk_container_per_run(tmp_path):
    stale = leftover("crashed-before")
    since = time.time()
    done = sweep(tmp_path, "docker", "--profile", "smoke", "--servers", "epoll", "--connections", "4", "32",
                 "--duration", "1", "--repeat", "1")
    runs = started_containers(since, time.time())
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"removing leftover server container {stale.short_id} of run crashed-before" in done.stderr
    assert ours(**{RUN_LABEL: "crashed-before"}) == []

    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "results.csv", "report.md", "plots"}
    assert list((tmp_path / "plots").glob("*.png"))
    document = json.loads((tmp_path / "results.json").read_text())
    environment = document["environment"]
    assert environment["runner"] == "docker"
    assert environment["image"]["id"] == CLIENT.images.get("swissknife:latest").id
    assert environment["image"]["tools"]["wrk"] == environment["tools"]["wrk"]
    records = standing(document)
    assert [(r["server"], r["connections"], r["status"]) for r in records] == [
        ("epoll", 4, "ok"), ("epoll", 32, "ok"), ("floor", 4, "ok"), ("floor", 32, "ok"), ("nginx", 4, "ok"),
        ("nginx", 32, "ok")]
    for record in records:
        assert record["requests"] > 0 and record["cpu_us_per_request"] > 0, record
        assert record["veth_consistent"] and record["veth_tx_bytes"] >= record["bytes"], record
        assert record["server_processes"] == (2 if record["server"] == "nginx" else 1)
        assert record["engine_cpu_share"] >= 0 and record["other_cpu_share"] >= 0, record
    assert "container engine CPU while wrk ran" in (tmp_path / "report.md").read_text()

    # One server container per server kind (reused across its points); one wrk
    # container for the sweep: its 12 wrk runs (3 servers x 2 counts x (warm-up + run)) are execs in it.
    assert len(runs) == 1, runs  # only this sweep's run
    (ran,) = runs.values()
    assert (ran["server"], ran["wrk"]) == (3, 1), runs
    assert ours() == []


def test_cpu_per_request_agrees_with_the_process_runner(tmp_path):
    """Same point, both runners: server CPU µs/request within 2x (a correctness bound, not a benchmark)."""
    point = ["--profile", "smoke", "--servers", "epoll", "--connections", "32", "--duration", "2", "--repeat", "2"]
    medians = {}
    for runner in ("process", "docker"):
        done = sweep(tmp_path / runner, runner, *point)
        assert done.returncode == 0, done.stdout + done.stderr
        records = json.loads((tmp_path / runner / "results.json").read_text())["records"]
        medians[runner] = {server: statistics.median(r["cpu_us_per_request"] for r in records if r["server"] == server)
                           for server in ("epoll", "nginx")}
    for server in ("epoll", "nginx"):
        ratio = medians["docker"][server] / medians["process"][server]
        assert 0.5 < ratio < 2, (server, medians)


def test_a_bench_stopped_mid_sweep_leaves_no_container(tmp_path):
    """SIGTERM (Ctrl-C, `docker compose stop`) while the server and the sweep's wrk container run."""
    process = subprocess.Popen([sys.executable, "-m", "bench", "--runner", "docker", "--out", str(tmp_path),
                                "--profile", "smoke", "--servers", "epoll", "--connections", "4", "32",
                                "--duration", "2", "--repeat", "3"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not {c.labels[ROLE_LABEL] for c in ours()} >= {"server", "wrk"}:
            assert time.monotonic() < deadline and process.poll() is None, "no server and wrk containers appeared"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, output
    assert ours() == []
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "interrupted"
