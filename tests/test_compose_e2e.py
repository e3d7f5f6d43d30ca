"""`docker compose` end to end, as a user runs it, on the real engine and namespaces (root).

namespaces up → `docker compose up bench` (smoke) → results, plots and report
on the host, traffic on swissknife0 → `docker compose down` and
`netns/setup.py down` → bench now stops at once naming the fix → nothing of
ours left; the whole sequence twice. And a bench container killed mid-sweep
leaves server and wrk containers that the next run removes. Namespaces that existed before are brought back afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from standing import standing

# The same daemon/root skips, image build and helpers as the runner's tests.
from test_docker_runner import CLIENT, ROOT, build_image, netns_setup, ours, pytestmark, started_containers  # noqa: F401

from bench.runners.docker import RUN_LABEL
from netns.config import Topology
from netns.topology import counters

TOPOLOGY = Topology()
# `up` as the README says, passing the sweep's status on (plain `up` always exits 0).
UP_BENCH = ("up", "--exit-code-from", "bench", "bench")
SMOKE = {"BENCH_PROFILE": "smoke", "BENCH_SERVERS": "epoll", "BENCH_CONNECTIONS": "4",
         "BENCH_DURATION": "1", "BENCH_REPEAT": "1"}


def compose(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "compose", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module", autouse=True)
def prepared():
    if compose("version").returncode != 0:
        pytest.fail("the Compose v2 plugin is missing: run sudo docker/install-engine.sh")
    build_image()
    existed = Path(f"/run/netns/{TOPOLOGY.server_ns}").exists()
    yield
    if existed:  # others on this host may be using them
        netns_setup("up")


def nothing_of_ours_left() -> None:
    assert ours() == []
    assert CLIENT.containers.list(all=True, filters={"label": "com.docker.compose.project=swissknife"}) == []
    namespaces = {TOPOLOGY.server_ns, TOPOLOGY.client_ns}
    assert not namespaces & set(os.listdir("/run/netns"))
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert TOPOLOGY.server_if not in links and TOPOLOGY.client_if not in links
    # Only the shared /run/netns self-mount may stay; no namespace mounts under it.
    mount_points = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    assert not {f"/run/netns/{name}" for name in namespaces} & mount_points


def test_compose_bench_from_nothing_to_nothing_twice(tmp_path):
    for attempt in (1, 2):
        results = tmp_path / str(attempt)
        netns_setup("up")
        veth_before, since = counters(TOPOLOGY), time.time()
        done = compose(*UP_BENCH, **SMOKE, BENCH_RESULTS=str(results))
        veth_after, runs = counters(TOPOLOGY), started_containers(since, time.time())
        assert done.returncode == 0, done.stdout + done.stderr

        (run,) = [p for p in results.iterdir() if p.is_dir()]  # beside index.html
        assert {p.name for p in run.iterdir()} >= {"results.json", "results.csv", "report.md", "plots"}
        # Paths as the host names them, never the container's.
        assert f"report: {results}/{run.name}/report.html" in done.stdout, done.stdout
        assert "/opt/swissknife" not in done.stdout + done.stderr, done.stdout + done.stderr
        assert list((run / "plots").glob("*.png"))
        document = json.loads((run / "results.json").read_text())
        # read by bench inside its container, through setns into sk-client
        assert document["environment"]["client_sysctls"]["net.ipv4.ip_local_port_range"] == "1024 65535"
        records = standing(document)
        assert [(r["server"], r["status"]) for r in records] == [
            ("epoll", "ok"), ("floor", "ok"), ("nginx", "ok")]
        assert all(r["requests"] > 0 for r in records)
        assert veth_after["tx_bytes"] - veth_before["tx_bytes"] >= sum(r["bytes"] for r in records) > 0
        (started,) = runs.values()  # 3 servers; their 6 wrk runs (warm-up + measured each) are execs in 1
        assert (started["server"], started["wrk"]) == (3, 1), runs

        assert compose("down").returncode == 0
        netns_setup("down")
        # Without the namespaces, bench stops at once with the command to run.
        started = time.monotonic()
        done = compose(*UP_BENCH, **SMOKE, BENCH_RESULTS=str(results))
        output = done.stdout + done.stderr
        assert done.returncode == 2 and time.monotonic() - started < 30, output
        assert "sudo python3 netns/setup.py up" in output and "Traceback" not in output, output
        assert compose("down").returncode == 0
        nothing_of_ours_left()


def test_a_bench_killed_mid_sweep_leaves_containers_the_next_run_removes(tmp_path):
    netns_setup("up")
    name = f"swissknife-e2e-killed-{uuid.uuid4().hex[:8]}"
    long_sweep = {**SMOKE, "BENCH_CONNECTIONS": "4 32", "BENCH_DURATION": "2", "BENCH_REPEAT": "3"}
    started = compose("run", "-d", "--rm", "--name", name, "bench", **long_sweep, BENCH_RESULTS=str(tmp_path))
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 60
    while not {c.labels["swissknife.role"] for c in ours()} >= {"server", "wrk"}:
        assert time.monotonic() < deadline, "no server and wrk containers appeared"
        time.sleep(0.1)
    CLIENT.containers.get(name).kill()  # SIGKILL: bench gets no chance to clean up
    orphans = ours()
    assert {c.labels["swissknife.role"] for c in orphans} >= {"server", "wrk"}
    (killed_run,) = {c.labels[RUN_LABEL] for c in orphans}

    done = compose("run", "--rm", "bench", **SMOKE, BENCH_RESULTS=str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "removing leftover server container" in done.stderr and killed_run in done.stderr, done.stderr
    assert ours(**{RUN_LABEL: killed_run}) == []
    assert ours() == []


def test_the_netns_service_cannot_change_a_host_sysctl_and_sets_sk_client_s():
    """No systempaths=unconfined: /proc/sys is read-only in the service, which has a network namespace of
    its own; `up` still writes sk-client's sysctls."""
    netns_setup("up")
    keys = ("net/ipv4/tcp_tw_reuse", "net/ipv4/ip_local_port_range", "vm/swappiness")
    host_before = {key: Path(f"/proc/sys/{key}").read_text() for key in keys}
    tried = compose("run", "--rm", "--entrypoint", "sh", "netns", "-c",
                    "for key in " + " ".join(keys) + "; do echo 7 >/proc/sys/$key && echo wrote $key; done; true")
    assert tried.returncode == 0 and "wrote" not in tried.stdout, tried.stdout + tried.stderr
    assert "Read-only file system" in tried.stderr, tried.stderr
    assert {key: Path(f"/proc/sys/{key}").read_text() for key in keys} == host_before

    client = ["ip", "netns", "exec", TOPOLOGY.client_ns, "sysctl", "-n"]
    subprocess.run([*client[:-1], "-w", "net.ipv4.tcp_tw_reuse=0"], check=True, capture_output=True)
    built = compose("run", "--rm", "netns", "up")
    assert built.returncode == 0, built.stdout + built.stderr
    assert f"set net.ipv4.tcp_tw_reuse=1 in {TOPOLOGY.client_ns}" in built.stdout, built.stdout
    assert subprocess.run([*client, "net.ipv4.tcp_tw_reuse"], capture_output=True, text=True).stdout.strip() == "1"
    assert {key: Path(f"/proc/sys/{key}").read_text() for key in keys} == host_before


def test_the_netns_service_builds_checks_and_removes_the_topology():
    """`docker compose run --rm netns up|status|down`: the same topology as sudo python3 netns/setup.py."""
    netns_setup("down")
    built = compose("run", "--rm", "netns", "up")
    assert built.returncode == 0, built.stdout + built.stderr
    assert "set net.ipv4.tcp_tw_reuse=1 in sk-client" in built.stdout, built.stdout
    checked = compose("run", "--rm", "netns", "status", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["healthy"] and report["reachable"], report
    assert report["client_sysctls"]["net.ipv4.ip_local_port_range"] == "1024 65535"
    # seen from the host too: the namespaces and mounts propagated back
    assert subprocess.run([sys.executable, str(ROOT / "netns" / "setup.py"), "status"],
                          capture_output=True, timeout=60).returncode == 0
    removed = compose("run", "--rm", "netns", "down")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert compose("down").returncode == 0
    nothing_of_ours_left()


def readme_benchmark_command() -> str:
    text = (ROOT / "README.md").read_text()
    after = text[text.index("Run the default benchmark end to end"):]
    return after.split("```sh\n", 1)[1].split("\n```", 1)[0]


def test_the_readme_benchmark_command_runs_as_written_from_no_topology(tmp_path):
    """The quickstart line itself (smoke-sized through the environment), starting with no namespaces."""
    netns_setup("down")
    command = readme_benchmark_command()
    assert command.count("\n") == 0 and "docker compose up" in command
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env={**os.environ, **SMOKE, "BENCH_RESULTS": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]  # beside index.html
    document = json.loads((run / "results.json").read_text())
    assert document["status"] == "complete" and document["environment"]["runner"] == "docker"
    assert [(r["server"], r["status"]) for r in standing(document)] == [
        ("epoll", "ok"), ("floor", "ok"), ("nginx", "ok")]
    assert compose("down").returncode == 0
