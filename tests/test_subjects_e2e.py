"""A user's own server, described only by a TOML file, verified, measured and reported by both runners; each
refusal of a bad subject before anything runs (real namespaces, wrk, Docker), and a peer measured for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_docker_runner import CLIENT, docker

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = ROOT / "tests" / "data" / "user_subject"
USER = "stdlib-threads"  # subject.toml's name
RUNNERS = ["process", "docker"]

pytestmark = pytest.mark.usefixtures("topology")  # root and the namespaces (skips without root)


def needs(runner: str) -> None:
    if runner == "docker" and not isinstance(CLIENT, docker.DockerClient):
        pytest.skip(f"no Docker daemon answers ({CLIENT}); start one: sudo docker/install-engine.sh")


def bench(*args: str, timeout: float = 300) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=os.environ | {"COLUMNS": "200"})
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_user_subject_is_verified_measured_and_reported(tmp_path, runner):
    needs(runner)
    out = tmp_path / "run"
    code, output = bench("--runner", runner, "--subject", str(SUBJECTS / "subject.toml"), "--servers", USER,
                         "--workloads", "plaintext", "bytes-64k", "sleep-5", "--connections", "8", "--repeat", "1",
                         "--duration", "1", "--out", str(out))
    assert code == 0, output
    run = json.loads((out / "results.json").read_text())
    mine = {r["workload"]: r for r in run["records"] if r["server"] == USER}
    assert mine["plaintext"]["status"] == mine["bytes-64k"]["status"] == "ok", mine
    assert mine["plaintext"]["requests"] > 0 and mine["bytes-64k"]["bytes"] >= 65536 * mine["bytes-64k"]["requests"]
    # Its description says it serves / and /bytes/N only: /sleep/MS is unsupported, with that reason.
    assert mine["sleep-5"]["status"] == "unsupported" and "not /sleep/MS" in mine["sleep-5"]["failure"]
    described = {s["name"]: s for s in run["config"]["subjects"]}
    assert described[USER]["category"] == "user" and described[USER]["directory"] == str(SUBJECTS)
    assert {"floor", "nginx"} <= set(described)  # the references measured beside it
    report = (out / "report.md").read_text()
    assert USER in report and (out / "plots" / "plaintext-requests.png").exists()


@pytest.mark.parametrize(("runner", "file", "says"), [
    ("process", "wrong.toml", "subject stdlib-wrong"),
    ("docker", "wrong.toml", "subject stdlib-wrong"),
    ("process", "silent.toml", "did not answer within"),
    ("docker", "no-image.toml", "image swissknife-no-such-image:never (subject stdlib-no-image) not found"),
])
def test_a_subject_that_cannot_be_measured_is_refused_before_the_run_with_one_line(tmp_path, runner, file, says):
    needs(runner)
    out = tmp_path / "run"
    code, output = bench("--runner", runner, "--subject", str(SUBJECTS / file), "--workloads", "plaintext",
                         "--out", str(out))
    last = output.strip().splitlines()[-1]
    assert code == 2 and says in last and last.startswith("bench: error: subject"), output
    if file == "wrong.toml":
        assert "route /bytes/N" in last and "1023 body bytes, expected 1024" in last, last
    assert not out.exists()  # nothing ran: no run directory


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_peer_is_verified_and_measured_like_our_models(tmp_path, runner):
    needs(runner)
    out = tmp_path / "run"
    code, output = bench("--runner", runner, "--servers", "epoll", "gunicorn-gthread", "--workloads", "plaintext",
                         "cpu-200",
                         "--connections", "8", "--repeat", "1", "--duration", "1", "--out", str(out))
    assert code == 0, output
    records = json.loads((out / "results.json").read_text())["records"]
    peer = {r["workload"]: r for r in records if r["server"] == "gunicorn-gthread"}
    assert peer["plaintext"]["status"] == peer["cpu-200"]["status"] == "ok" and peer["cpu-200"]["requests"] > 0
    # Each request burnt its 200 µs in the handler: the peer's CPU per request is at least that.
    assert peer["cpu-200"]["cpu_us_per_request"] >= 200
    # Reports show the peers as their own group beside the models.
    assert "the peers peaked at" in (out / "report.md").read_text()
