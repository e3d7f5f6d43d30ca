"""`python3 -m bench profile` and `--flamegraphs` end to end: real namespaces, servers, wrk and perf, as root.

Python frames need a 3.12+ interpreter with perf support (found as in
test_profiling.py, passed with --server-python); without one, the run must say
that the frames are missing and why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]

from standing import standing  # noqa: E402
from test_profiling import NETWORK_FUNCTIONS, perf_capable_python  # noqa: E402

from bench.profiling import breakdown, read_folded  # noqa: E402
from bench.results import schema  # noqa: E402

pytestmark = [
    pytest.mark.skipif(shutil.which("perf") is None or shutil.which("wrk") is None,
                       reason="needs perf and wrk (tests/run installs them)"),
    pytest.mark.usefixtures("topology"),  # skips without root
]
PROFILED = ("epoll", "epoll-pool")


def bench(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def server_python() -> str | None:
    found = perf_capable_python()
    return found[0] if found else None


@pytest.fixture(scope="module")
def profile_run(tmp_path_factory, server_python) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("profile") / "run"
    python = ["--server-python", server_python] if server_python else []
    code, output = bench("profile", "--servers", *PROFILED, "--duration", "2", "--out", str(out), *python)
    assert code == 0, output
    return out, json.loads((out / "results.json").read_text())


def profiles(document: dict) -> dict[str, dict]:
    return {p["server"]: p for p in document["profiling"]["profiles"]}


def test_flame_graphs_show_kernel_networking_and_python_frames(profile_run, server_python) -> None:
    out, document = profile_run
    for server in PROFILED:
        profile = profiles(document)[server]
        assert profile["status"] == "ok", profile["message"]
        svg = (out / profile["svg"]).read_text()
        assert svg.startswith("<?xml") and "<svg" in svg
        assert any(function in svg for function in NETWORK_FUNCTIONS), f"{server}: no kernel networking frame"
        if server_python:
            assert profile["python_method"] in ("perf_jit", "perf")
            assert re.search(r"py::[\w.<>]+:\S*/servers/\w+\.py", svg), f"{server}: no Python function from servers/"
        else:
            assert profile["python_method"] == "none"
            assert any("no perf support" in note for note in profile["notes"]), profile["notes"]


def test_folded_stacks_parse_and_shares_sum_to_100(profile_run) -> None:
    out, document = profile_run
    for server, profile in profiles(document).items():
        assert read_folded(out / profile["folded"]), f"{server}: no folded stacks"
        assert sum(breakdown(out / profile["folded"]).shares().values()) == pytest.approx(100.0)


def test_results_carry_syscalls_per_request_and_the_interpreter(profile_run, server_python) -> None:
    _, document = profile_run
    jsonschema.validate(document, schema())
    assert {r["server"] for r in document["records"]} == {*PROFILED, "floor", "nginx"}
    assert all(r["status"] == "ok" and r["connections"] == 64 for r in document["records"])
    for server, profile in profiles(document).items():
        assert profile["syscalls_per_request"] > 0, (server, profile["syscalls_message"])
    assert (server_python or sys.executable) in document["environment"]["tools"]["server_python"]


def test_report_and_differential_redraw_from_the_run_directory(profile_run) -> None:
    out, _ = profile_run
    diff = out / "flamegraphs" / "plaintext-epoll-vs-epoll-pool.svg"
    assert re.search(r"samples, [\d.]+%; [+-]?[\d.]+%\)", diff.read_text()), "no differential frames"
    report = (out / "report.md").read_text()
    assert "## Where the time goes" in report and "| epoll-pool |" in report
    assert "plots/plaintext-breakdown.png" in report and "flamegraphs/plaintext-epoll-vs-epoll-pool.svg" in report
    for path in (out / "report.md", out / "plots" / "plaintext-breakdown.png", diff):
        path.unlink()
    code, output = bench("plot", str(out))
    assert code == 0, output
    assert (out / "report.md").read_text() == report
    assert (out / "plots" / "plaintext-breakdown.png").read_bytes().startswith(b"\x89PNG") and diff.exists()


def test_flamegraphs_on_a_sweep_profile_an_extra_run_per_server(tmp_path) -> None:
    out = tmp_path / "run"
    code, output = bench("--preset", "plaintext", "--servers", "epoll", "--connections", "4", "8", "--duration", "1",
                         "--repeat", "1", "--flamegraphs", "--out", str(out))
    assert code == 0, output
    document = json.loads((out / "results.json").read_text())
    assert len(standing(document)) == 3 * 2  # the measured points only: epoll, floor and nginx at 4 and 8
    assert [(p["server"], p["connections"], p["status"]) for p in document["profiling"]["profiles"]] == [
        ("epoll", 8, "ok"), ("floor", 8, "ok"), ("nginx", 8, "ok")]
    assert (out / "flamegraphs" / "plaintext-epoll.svg").exists()


def test_without_perf_the_run_completes_with_one_line_and_no_profiles(tmp_path) -> None:
    out = tmp_path / "run"
    code, output = bench("profile", "--servers", "epoll", "--duration", "1", "--out", str(out),
                         env=os.environ | {"SWISSKNIFE_PERF": "/nonexistent/perf"})
    assert code == 0, output
    assert "no profiles: perf not found (/nonexistent/perf)" in output, output
    assert not (out / "flamegraphs").exists()
    document = json.loads((out / "results.json").read_text())
    assert document["status"] == "complete" and document["profiling"]["profiles"] == []
    assert "No profiles: perf not found" in (out / "report.md").read_text()


def test_diff_names_must_be_swept() -> None:
    code, output = bench("profile", "--servers", "epoll", "--diff", "epoll,poll")
    assert code == 2 and "--diff: poll not among the servers swept" in output, output
