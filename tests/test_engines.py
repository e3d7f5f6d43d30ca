"""Two machines simulated on one host: the servers on this host's Docker engine, wrk on a second dockerd
that lives in its own network namespace behind a veth pair (tests/engine_pair.py).

Every engine is named the way a user names another machine's: by its socket URL. The load only ever
goes to HOST_ADDR, the host's end of that pair.
"""

from __future__ import annotations

import os
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

from engine_pair import HOST_ADDR, SecondEngine, second_engine  # noqa: E402

from bench.runners.engines import connect, ship_image  # noqa: E402

FIRST = "unix:///var/run/docker.sock"
IMAGE = "swissknife:latest"


def first_daemon() -> docker.DockerClient | Exception:
    try:
        client = docker.DockerClient(base_url=FIRST)
        client.ping()
        return client
    except Exception as error:  # whatever stops us reaching the daemon means "skip"
        return error


CLIENT = first_daemon()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a second dockerd and its namespace need root"),
    pytest.mark.skipif(not isinstance(CLIENT, docker.DockerClient),
                       reason=f"no Docker daemon answers ({CLIENT}); start one: sudo docker/install-engine.sh"),
]


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
            "--server-addr", HOST_ADDR]


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
