"""Docker Engine 26 beside the host's 20.10: Debian trixie's docker.io 26.1.5 with its containerd 1.7.24
(docker/fetch-engine.sh unpacks them once; the host's runc runs the containers), started as a second engine
in a namespace of ours (tests/engine_pair.py: ENGINE26), the image shipped into it.

Engine 25+ blocks io_uring in its default seccomp profile: on 26 the io-uring server cannot start without
the docker runner's seccomp option, and with it it is measured; no other container gets it. The smoke
sweep runs there as on 20.10 (DOCKER_HOST: this host's path), with the servers on 26 and wrk on 20.10 (the
engine options: results.json describes both), and through the compose bench. Skipped, with the reason,
where trixie's engine cannot be fetched or cannot run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

docker = pytest.importorskip("docker", reason="the Docker SDK for Python (`docker`) is not installed")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from engine_pair import ENGINE26, SecondEngine, second_engine, veth_counters  # noqa: E402
from standing import standing  # noqa: E402

# This host's daemon and the root/daemon skips; compose as its end-to-end tests run it.
from test_compose_e2e import UP_BENCH, compose  # noqa: E402
from test_docker_runner import CLIENT, pytestmark  # noqa: E402, F401

from bench.network import Namespaces  # noqa: E402
from bench.runners.docker import ROLE_LABEL, DockerRunner  # noqa: E402
from bench.runners.engines import connect, ship_image  # noqa: E402
from netns.config import Topology  # noqa: E402

FIRST = "unix:///var/run/docker.sock"
IMAGE = "swissknife:latest"
CANNOT = 3  # docker/fetch-engine.sh: this host cannot have trixie's engine
SECCOMP_OFF = "seccomp=unconfined"
SMOKE = ["--preset", "smoke", "--duration", "1", "--repeat", "1"]


@pytest.fixture(scope="module")
def engine26(topology) -> Iterator[SecondEngine]:
    fetched = subprocess.run([str(ROOT / "docker" / "fetch-engine.sh")], capture_output=True, text=True,
                             timeout=300)
    if fetched.returncode == CANNOT:
        pytest.skip(f"trixie's Docker Engine 26: {fetched.stderr.strip().splitlines()[-1]}")
    assert fetched.returncode == 0, fetched.stderr
    with second_engine(ENGINE26, Path(fetched.stdout.strip())) as engine:
        ship_image(IMAGE, connect(FIRST), connect(engine.url))
        yield engine


def bench(*args: str, docker_host: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"DOCKER_HOST": docker_host} if docker_host else {})}
    return subprocess.run([sys.executable, "-m", "bench", "--runner", "docker", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


class SecurityWatch:
    """Every container of ours an engine runs while it watches: its role, command and HostConfig.SecurityOpt,
    read from the engine (inspect) as the sweep runs."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.seen: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}  # id -> role, command, options
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for c in self.client.containers.list(filters={"label": ROLE_LABEL}, ignore_removed=True):
                self.seen[c.id] = (c.labels[ROLE_LABEL], tuple(c.attrs["Config"]["Cmd"]),
                                   tuple(c.attrs["HostConfig"]["SecurityOpt"] or ()))

    def __enter__(self) -> SecurityWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def unconfined(self) -> list[tuple[str, ...]]:
        """The commands of the containers that ran without seccomp; asserts the watch saw io-uring's server."""
        assert any(role == "server" and "io-uring" in command for role, command, _ in self.seen.values()), self.seen
        return [command for _, command, options in self.seen.values() if SECCOMP_OFF in options]

    def only_io_uring_unconfined(self) -> bool:
        commands = self.unconfined()
        return len(commands) >= 1 and all("io-uring" in command and "servers" in command for command in commands)


def status_fields(client: docker.DockerClient, **options) -> dict[str, str]:
    """A default container's capability sets and seccomp mode (/proc/self/status) on `client`'s engine."""
    out = client.containers.run(IMAGE, ["grep", "-E", "^(Cap(Eff|Bnd)|Seccomp):", "/proc/self/status"],
                                remove=True, **options)
    return dict(line.split(":\t") for line in out.decode().splitlines())


def test_engine_26_blocks_io_uring_and_the_runner_unconfines_that_server_alone(engine26, monkeypatch):
    client = engine26.client()
    assert client.version()["Version"].startswith("26.1.5")
    # The same default capabilities as 20.10's (the runner adds and drops the same ones on both), and a
    # seccomp filter (mode 2) that the option takes away.
    assert status_fields(client) == status_fields(CLIENT) == {**status_fields(CLIENT), "Seccomp": "2"}
    assert status_fields(client, security_opt=[SECCOMP_OFF])["Seccomp"] == "0"
    # Its default profile, as any user's Engine 25+: the io-uring server says why and exits 3.
    blocked = client.containers.run(IMAGE, ["python3", "-m", "servers", "io-uring", "--host", "::1", "-p", "18099"],
                                    detach=True, network_mode="host", labels={ROLE_LABEL: "probe"})
    try:
        assert blocked.wait(timeout=30)["StatusCode"] == 3
        assert "a seccomp filter blocks io_uring" in blocked.logs().decode()
    finally:
        blocked.remove(force=True)

    monkeypatch.setenv("DOCKER_HOST", engine26.url)  # the runner's engine on one host: docker.from_env()
    topo = Topology()
    runner = DockerRunner(topo, server_cpus=(0,), client_cpu=1)
    runner.check()
    port = Namespaces(topo).free_port()
    try:
        for kind, options in (("io-uring", ["no-new-privileges", SECCOMP_OFF]), ("epoll", ["no-new-privileges"])):
            runner.start_server(kind, topo.server_addr, port)
            [server] = client.containers.list(filters={"label": f"{ROLE_LABEL}=server"})
            assert server.attrs["HostConfig"]["SecurityOpt"] == options, kind
            time.sleep(1)
            assert runner.server_exit_code() is None, runner.server_log()
            [run] = runner.run_wrk(["wrk", "-c4", "-d1s", f"http://[{topo.server_addr}]:{port}/"], timeout_s=10)
            assert run.returncode == 0 and "Requests/sec" in run.stdout, run.stdout + run.stderr
            # wrk's CPU from its cgroup on Engine 26 (cgroup v1, cgroupfs): a few µs a request (per request,
            # as a busy host slows wrk down too).
            requests = int(run.stdout.split(" requests in ")[0].split()[-1])
            assert 1 < run.cpu_s * 1e6 / requests < 100, (run.cpu_s, requests)
        [wrk] = client.containers.list(filters={"label": f"{ROLE_LABEL}=wrk"})
        assert wrk.attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]
    finally:
        runner.stop()
    assert client.containers.list(all=True, filters={"label": ROLE_LABEL}) == []


def cpu_medians(records: list[dict]) -> dict[str, float]:
    servers = {r["server"] for r in records}
    return {s: statistics.median(r["cpu_us_per_request"] for r in records if r["server"] == s) for s in servers}


def test_smoke_sweep_on_26_measures_io_uring_as_on_20_10(engine26, tmp_path):
    """The same sweep on both engines, this host's path (servers in sk-server, wrk in sk-client): every point
    ok on each, io-uring measured on 26, CPU per request alike (a correctness bound, not a benchmark)."""
    runs = {}
    for name, host in (("20.10", None), ("26", engine26.url)):
        engine = engine26.client() if host else CLIENT
        with SecurityWatch(engine) as watch:
            done = bench(*SMOKE, "--servers", "epoll", "io-uring", "--out", str(tmp_path / name), docker_host=host)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        # Only Engine 26 needs the option, and there only the io-uring server gets it.
        assert watch.only_io_uring_unconfined() if host else watch.unconfined() == [], watch.seen
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
        records = standing(runs[name])
        assert len(records) == 8 and [r["status"] for r in records] == ["ok"] * 8, [r["failure"] for r in records]
        assert all(r["veth_consistent"] and r["client_cpu_s"] > 0 for r in records)
    [local] = runs["26"]["environment"]["engines"]
    assert (local["role"], local["engine"], local["docker"], local["api_version"]) == (
        "local", engine26.url, "26.1.5+dfsg1", "1.45")
    assert (local["cgroup_version"], local["cgroup_driver"], local["seccomp_profile"]) == ("1", "cgroupfs", "builtin")
    [old] = runs["20.10"]["environment"]["engines"]
    assert (old["engine"], old["seccomp_profile"], old["docker"][:5]) == (FIRST, "default", "20.10")
    old_cpu, new_cpu = cpu_medians(standing(runs["20.10"])), cpu_medians(standing(runs["26"]))
    for server in old_cpu:
        assert 0.5 < new_cpu[server] / old_cpu[server] < 2, (server, old_cpu, new_cpu)


def test_servers_on_26_and_wrk_on_20_10_across_the_pair_both_engines_recorded(engine26, tmp_path):
    before = veth_counters(ENGINE26)
    with SecurityWatch(engine26.client()) as watch:
        done = bench(*SMOKE, "--servers", "io-uring", "--connections", "4", "--out", str(tmp_path / "run"),
                     "--server-engine", engine26.url, "--client-engine", FIRST,
                     "--server-addr", ENGINE26.engine_addr)
    after = veth_counters(ENGINE26)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert watch.only_io_uring_unconfined(), watch.seen
    run = json.loads((tmp_path / "run" / "results.json").read_text())
    records = standing(run)
    assert [(r["server"], r["status"]) for r in records] == [("io-uring", "ok"), ("floor", "ok"), ("nginx", "ok")]
    assert after["rx_bytes"] - before["rx_bytes"] >= sum(r["bytes"] for r in records) > 0  # 26's answers
    server, client = run["environment"]["engines"]
    assert (server["role"], server["docker"], server["seccomp_profile"]) == ("server", "26.1.5+dfsg1", "builtin")
    assert (client["role"], client["engine"], client["seccomp_profile"]) == ("client", FIRST, "default")
    assert server["daemon_id"] != client["daemon_id"]


def test_the_compose_bench_runs_on_26(engine26, tmp_path):
    socket = engine26.url.removeprefix("unix://")
    on_26 = {"DOCKER_HOST": engine26.url, "SWISSKNIFE_DOCKER_SOCK": socket}
    smoke = {"BENCH_PROFILE": "smoke", "BENCH_SERVERS": "io-uring", "BENCH_CONNECTIONS": "4",
             "BENCH_DURATION": "1", "BENCH_REPEAT": "1"}
    try:
        with SecurityWatch(engine26.client()) as watch:
            done = compose(*UP_BENCH, **on_26, **smoke, BENCH_RESULTS=str(tmp_path))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finally:
        assert compose("down", **on_26).returncode == 0
    assert watch.only_io_uring_unconfined(), watch.seen
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]  # beside index.html
    document = json.loads((run / "results.json").read_text())
    assert [(r["server"], r["status"]) for r in standing(document)] == [
        ("io-uring", "ok"), ("floor", "ok"), ("nginx", "ok")]
    # The image's bench ran there (the engines it records are checked above, with bench from this checkout).
    assert document["environment"]["image"]["id"] == engine26.client().images.get(IMAGE).id
    assert engine26.client().containers.list(all=True) == []  # compose's and the bench's all gone
