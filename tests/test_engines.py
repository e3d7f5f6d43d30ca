"""Two machines simulated on one host: the servers on this host's Docker engine, wrk on a second dockerd
that lives in its own network namespace behind a veth pair (tests/engine_pair.py).

Every engine is named the way a user names another machine's: by its socket URL. The load only ever
goes to PAIR.host_addr, the host's end of that pair.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

docker = pytest.importorskip("docker", reason="the Docker SDK for Python (`docker`) is not installed")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from engine_pair import PAIR, SecondEngine, second_engine, veth_counters  # noqa: E402
from standing import standing  # noqa: E402

# This host's daemon and the root/daemon skips, as the runner's tests have them; FIRST is how users name it.
from test_docker_runner import CLIENT, pytestmark  # noqa: E402, F401

from bench.runners.engines import connect, ship_image  # noqa: E402

FIRST = "unix:///var/run/docker.sock"
IMAGE = "swissknife:latest"


@pytest.fixture(scope="module")
def engine() -> Iterator[SecondEngine]:
    done = subprocess.run([str(ROOT / "docker" / "build.sh")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    with second_engine() as started:
        yield started


def bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def engine_args(client: str, *more_clients: str) -> list[str]:
    return ["--server-engine", FIRST, *(arg for c in (client, *more_clients) for arg in ("--client-engine", c)),
            "--server-addr", PAIR.host_addr]


def started_roles(client: docker.DockerClient, since: float, until: float) -> list[str]:
    """The roles of the containers of ours this engine started in [since, until]."""
    events = client.events(since=int(since), until=int(until) + 1, decode=True,
                           filters={"type": "container", "event": "start", "label": "swissknife.role"})
    return [e["Actor"]["Attributes"]["swissknife.role"] for e in events if e["timeNano"] >= since * 1e9]


def refused(engine: SecondEngine, client: str, tmp_path: Path) -> str:
    """bench's one error line when it refuses to start, having run nothing on either engine."""
    since = time.time()
    done = bench("--preset", "smoke", "--out", str(tmp_path / "run"), *engine_args(client), timeout=120)
    until = time.time()
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("bench: error: "), done.stderr
    assert not (tmp_path / "run").exists()
    assert started_roles(CLIENT, since, until) == started_roles(engine.client(), since, until) == []
    return lines[0]


def test_refuses_before_any_point_a_missing_image_an_unreachable_engine_and_a_different_image(engine, tmp_path):
    line = refused(engine, engine.url, tmp_path)
    assert line == (f"bench: error: image {IMAGE} not found on the client engine {engine.url}; copy it there: "
                    f"python3 -m bench ship-image --from {FIRST} --to {engine.url}")

    line = refused(engine, "unix:///nonexistent/docker.sock", tmp_path)
    assert line.startswith("bench: error: engine unix:///nonexistent/docker.sock does not answer: ")
    line = refused(engine, "no-such-context", tmp_path)
    assert line.startswith("bench: error: engine no-such-context: no such Docker context")

    # The fix the first message named, run as written (it goes through the SDK: save | load).
    shipped = bench("ship-image", "--from", FIRST, "--to", engine.url)
    assert shipped.returncode == 0, shipped.stderr
    assert engine.client().images.get(IMAGE).id == CLIENT.images.get(IMAGE).id

    # Another image under the same name (as a separate build on that machine would make).
    other = engine.client().containers.create(IMAGE, ["true"])
    try:
        other.commit(repository="swissknife", tag="latest")
    finally:
        other.remove()
    line = refused(engine, engine.url, tmp_path)
    assert f"image {IMAGE} is sha256:" in line and f"on the client engine {engine.url}; copy it there" in line
    ship_image(IMAGE, connect(FIRST), connect(engine.url))  # as it was, for the tests after this one


def sweep(tmp_path: Path, *clients: str) -> tuple[dict, Path, dict[str, int], list[str], list[str]]:
    """A smoke sweep (every point once, 1 s) with the servers on the first daemon and wrk on `clients`:
    its results, its directory, the bytes that crossed the pair, and the roles each daemon started."""
    out = tmp_path / "run"
    since, before = time.time(), veth_counters()
    done = bench("--preset", "smoke", "--duration", "1", "--repeat", "1", "--out", str(out), *engine_args(*clients))
    after, until = veth_counters(), time.time()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    crossed = {key: after[key] - before[key] for key in after}
    client = docker.DockerClient(base_url=clients[0])
    return (json.loads((out / "results.json").read_text()), out, crossed, started_roles(CLIENT, since, until),
            started_roles(client, since, until))


def test_one_client_engine_runs_every_point_across_the_pair(engine, tmp_path):
    run, _, crossed, first, second = sweep(tmp_path, engine.url)
    records = standing(run)
    assert len(records) == 8 and [r["status"] for r in records] == ["ok"] * 8, [r["failure"] for r in records]
    # Servers on the first daemon, wrk on the second, and nothing of either role the other way round.
    assert "server" in first and "wrk" not in first
    assert "wrk" in second and "server" not in second
    # The load went to PAIR.host_addr only: across the pair (tx: from the servers to wrk).
    assert crossed["tx_bytes"] >= sum(r["bytes"] for r in records) > 0
    assert crossed["rx_packets"] >= sum(r["requests"] for r in records) // 64  # requests arrive, batched
    assert run["environment"]["traffic"].startswith(
        f"{PAIR.host_if}, the server host's interface holding {PAIR.host_addr}")
    assert all(r["veth_consistent"] and r["clients"] is None and r["other_cpu_share"] is None for r in records)
    engines = run["environment"]["engines"]
    assert [(e["role"], e["engine"]) for e in engines] == [("server", FIRST), ("client", engine.url)]
    assert engines[0]["daemon_id"] != engines[1]["daemon_id"] and all(e["cpus"] >= 1 for e in engines)


def merged_percentile(histograms: list[list[list[int]]], p: float) -> int:
    samples = sorted(value for histogram in histograms for value, count in histogram for _ in range(count))
    return samples[math.floor(p / 100 * len(samples) + 1) - 1]


def test_two_client_engines_start_together_and_merge_exactly(engine, tmp_path):
    run, out, crossed, _, second = sweep(tmp_path, engine.url, engine.url)  # the second daemon, twice
    records = standing(run)
    assert [r["status"] for r in records] == ["ok"] * 8, [r["failure"] for r in records]
    assert second.count("wrk") >= 2  # one wrk container per client engine
    for r in records:
        stem = f"{r['workload']}-{r['server']}-c{r['connections']}-r{r['repeat']}"
        stem += f"-a{r['attempt']}" if r["attempt"] > 1 else ""  # a repeat measured again
        reports = [json.loads((out / "wrk" / f"{stem}-client{i}.json").read_text()) for i in (1, 2)]
        assert r["requests"] == reports[0]["requests"] + reports[1]["requests"] == sum(
            c["requests"] for c in r["clients"])
        assert r["bytes"] == sum(report["bytes"] for report in reports)
        histograms = [report["histogram"] for report in reports]
        assert r["latency_p50_us"] == merged_percentile(histograms, 50)
        assert r["latency_p99_us"] == merged_percentile(histograms, 99)
        assert [c["engine"] for c in r["clients"]] == [engine.url, engine.url]
    assert crossed["tx_bytes"] >= sum(r["bytes"] for r in records)
