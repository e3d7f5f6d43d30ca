"""Open-loop points through the real CLI, on both runners, in the real namespaces (as root).

The docker runner's case runs from swissknife:latest (or the image SWISSKNIFE_IMAGE names), which tests/run
builds from this checkout before the suite, openloop included (docker/Dockerfile).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from standing import standing

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(not Path("/run/netns/sk-server").exists(), reason="no topology: python3 netns/setup.py up"),
]


def sweep(out: Path, runner: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench", "--runner", runner, "--servers", "epoll", "--workloads",
                           "latency-plaintext", "latency-mix-sleep", "--rates", "0.5", "2000", "--repeat", "1",
                           "--duration", "2", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = (out / "report.md").read_text()
    assert "## Latency under a constant rate" in report and "p99 ≤ 10 ms held up to" in report
    assert (out / "plots" / "latency-plaintext-c32-latency-load.png").exists()
    page = (out / "report.html").read_text()  # the same section in the page, its figure as SVG
    assert "<h2>Latency under a constant rate</h2>" in page and "p99 ≤ 10 ms held up to" in page
    assert 'src="plots/latency-plaintext-c32-latency-load.svg"' in page
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("runner", ["process", "docker"])
def test_a_rate_sweep_records_the_peak_then_each_rate(tmp_path, runner):
    if runner == "docker" and not Path("/var/run/docker.sock").exists():
        pytest.skip("no Docker daemon: docker/install-engine.sh starts one (tests/run does)")
    # A peak flagged (disturbed, on a loaded host) is measured again: the rates scale the attempt kept.
    records = [r for r in standing(sweep(tmp_path, runner)) if r["server"] == "epoll"]
    assert [(r["workload"], r["rate_asked"], r["status"]) for r in records] == [
        (w, rate, "ok") for w in ("latency-plaintext", "latency-mix-sleep") for rate in (None, "0.5×peak", "2000/s")]
    peak, half, fixed = records[:3]
    assert peak["offered_rate"] is None and peak["requests_per_s"] > 0
    assert half["offered_rate"] == pytest.approx(0.5 * peak["requests_per_s"])
    assert fixed["offered_rate"] == 2000
    for record in (half, fixed):
        assert record["achieved_rate"] == pytest.approx(record["offered_rate"], rel=0.01) or record["generator_bound"]
        recorded = sum(count for _, count in record["latency_histogram_ns"])
        assert recorded == record["requests"] + record["unanswered"]
        assert record["latency_p99_99_us"] >= record["latency_p99_us"] >= record["latency_p50_us"] > 0
        assert record["latency_uncorrected_p99_us"] is not None and record["classes"] is None
    mix = records[5]
    assert set(mix["classes"]) == {"/", "/sleep/20"}
    assert mix["classes"]["/sleep/20"]["latency_p50_us"] >= 20_000
    assert sum(c["requests"] for c in mix["classes"].values()) == mix["requests"] + mix["unanswered"]
