"""The open-loop generator's correction, validated against a server that stalls on a timer (loopback).

Correctness, not speed: a rate far below the server's capacity, so the only latency is the stall's. A server
that stops for STALL of every PERIOD seconds leaves STALL/PERIOD of the intended requests waiting, uniformly,
up to STALL: their corrected p99 is STALL × (1 − 0.01 × PERIOD/STALL) (0.95 s for 1 s in 5 s). A closed-loop
measurement (the uncorrected figure) sees one slow request per connection and stall, and a p99 far below.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench import loadgen
from tests.servers_harness import free_port

STALL_SERVER = Path(__file__).with_name("stall_server.py")
RATE = 1000  # requests/s: a few % of what the Python test server answers
CONNECTIONS = 4
DURATION_S = 10  # two whole periods of 5 s


@contextmanager
def stall_server(period_s: float, stall_s: float) -> Iterator[int]:
    port = free_port("127.0.0.1")
    server = subprocess.Popen([sys.executable, str(STALL_SERVER), str(port), str(period_s), str(stall_s)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        yield port
    finally:
        server.kill()
        server.wait()


def run(port: int, timeout_s: float, duration_s: float = DURATION_S) -> loadgen.Report:
    argv = loadgen.command(loadgen.binary(), "127.0.0.1", port, RATE, CONNECTIONS, duration_s, timeout_s,
                           [loadgen.Route("/", 100)])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + timeout_s + 10)
    assert done.returncode == 0, done.stderr
    return loadgen.parse(done.stdout)


def test_corrected_p99_matches_the_stall_and_uncorrected_hides_it() -> None:
    with stall_server(5, 1) as port:
        report = run(port, timeout_s=2)
    corrected = loadgen.figures_us(report.histogram_ns)
    uncorrected = loadgen.figures_us(report.uncorrected_ns)
    assert report.requests == report.scheduled == RATE * DURATION_S
    assert corrected["p99"] == pytest.approx(950_000, rel=0.15), corrected
    assert uncorrected["p99"] < 0.1 * corrected["p99"], uncorrected
    assert corrected["max"] == pytest.approx(1_000_000, rel=0.15)


def test_a_stall_longer_than_the_timeout_is_counted_not_dropped() -> None:
    # One 3 s stall at the start of a 10 s run, a 2 s timeout: the first second's requests wait more than it.
    with stall_server(60, 3) as port:
        report = run(port, timeout_s=2)
    corrected = loadgen.figures_us(report.histogram_ns)
    recorded = sum(count for _, count in report.histogram_ns)
    assert recorded == report.requests + report.unanswered == report.scheduled == RATE * DURATION_S
    assert report.errors["timeout"] == pytest.approx(RATE * 1, rel=0.15)
    assert corrected["max"] == pytest.approx(3_000_000, rel=0.1)
    assert corrected["p99"] == pytest.approx(3_000_000 * (1 - 0.01 / 0.3), rel=0.15)


def test_the_rate_is_kept_on_a_server_that_keeps_up() -> None:
    with stall_server(5, 0) as port:
        report = run(port, timeout_s=2, duration_s=5)
    assert report.achieved_rate == pytest.approx(RATE, rel=0.01)
    assert report.requests == report.scheduled
    assert loadgen.figures_us(report.histogram_ns)["p50"] < 10_000
