"""Profiling real servers in sk-server under real wrk load from sk-client, with real perf (as root).

Python frames need an interpreter with perf support (3.12+; the host's 3.11 has
none): the host interpreter's profile must say so and still show kernel frames,
and a 3.13/3.12 found on PATH must show the servers' own Python functions.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

from bench.profiling import (  # noqa: E402
    CATEGORIES,
    OTHER,
    ProfileResult,
    PythonSupport,
    breakdown,
    count_syscalls,
    differential,
    markdown_table,
    perf_problem,
    plot_breakdown,
    profile_server,
    python_perf_args,
    read_folded,
    remove_interpreter_files,
)
from bench.profiling.offcpu import off_cpu_breakdown, off_cpu_table, profile_off_cpu  # noqa: E402
from netns import ns  # noqa: E402

pytestmark = [pytest.mark.skipif(shutil.which("perf") is None or shutil.which("wrk") is None,
                                 reason="needs perf and wrk (tests/run installs them)"),
              pytest.mark.usefixtures("topology")]  # skips without root

SERVER_ADDR = "fd00:5a::1"
CONNECTIONS = 64
PROFILE_S = 3
SYSCALL_S = 1.5
NETWORK_FUNCTIONS = ("tcp_sendmsg", "tcp_recvmsg", "tcp_v6_rcv", "ip6_xmit", "veth_xmit")


def perf_capable_python() -> tuple[str, PythonSupport] | None:
    """A 3.13 or 3.12 on PATH (Debian trixie's python3.13) or installed by pyenv (the CI hosts)."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which("python3.13"), shutil.which("python3.12"),
                  *sorted(map(str, pyenv_root.glob("versions/3.1[23]*/bin/python3")), reverse=True)]
    for path in filter(None, candidates):
        support = python_perf_args(path)
        if support.method != "none":
            return path, support
    return None


class LoadedServer:
    """A server pinned to CPU 0 in sk-server, with wrk on CPU 1 in sk-client driving it."""

    def __init__(self, python: str, support: PythonSupport, kind: str, port: int, load_s: int,
                 path: str = "/") -> None:
        command = ["taskset", "-c", "0", python, *support.args, "-m", "servers", kind, "--host", SERVER_ADDR,
                   "-p", str(port)]
        self.server = ns.popen("sk-server", command, cwd=ROOT, stdout=subprocess.DEVNULL)
        self.pid = self.server.pid  # taskset execs the interpreter: same process
        wait_for_port(port)
        url = f"http://[{SERVER_ADDR}]:{port}{path}"
        self.wrk = ns.popen("sk-client", ["taskset", "-c", "1", "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{load_s}s", url],
                            stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)  # past wrk's connection set-up

    def requests_per_second(self) -> float:
        report = self.wrk.communicate(timeout=60)[0]
        return float(re.search(r"Requests/sec:\s+([\d.]+)", report).group(1))

    def stop(self) -> None:
        self.wrk.kill()
        self.wrk.wait()
        self.server.terminate()
        self.server.wait(timeout=10)
        remove_interpreter_files([self.pid])


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = ns.run("sk-client", ["bash", "-c", f"exec 3<>/dev/tcp/{SERVER_ADDR}/{port}"], capture_output=True)
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"server on port {port} never answered")


def profile_under_load(python: str, support: PythonSupport, kind: str, port: int, out_dir: Path) -> ProfileResult:
    loaded = LoadedServer(python, support, kind, port, load_s=2 * PROFILE_S + 2)  # on-CPU, then off-CPU
    try:
        return profile_server([loaded.pid], PROFILE_S, out_dir, kind, support)
    finally:
        loaded.stop()


def frame_names(result: ProfileResult) -> set[str]:
    return {frame for stack in read_folded(result.folded) for frame in stack.split(";")}


@pytest.fixture(scope="module")
def capable() -> tuple[str, PythonSupport]:
    found = perf_capable_python()
    if found is None:
        pytest.skip("no python3.13/python3.12 with perf support on PATH: Python frames cannot be shown here")
    return found


@pytest.fixture(scope="module")
def python_profiles(capable, tmp_path_factory) -> Iterator[dict[str, ProfileResult]]:
    python, support = capable
    out_dir = tmp_path_factory.mktemp("flamegraphs")
    yield {kind: profile_under_load(python, support, kind, port, out_dir)
           for kind, port in (("epoll", 18081), ("epoll-pool", 18082))}


def test_host_python_without_perf_support_says_why_and_keeps_kernel_frames(tmp_path: Path) -> None:
    support = python_perf_args(sys.executable)
    if support.method != "none":
        pytest.skip(f"{sys.executable} has perf support ({support.method}): covered by the Python-frames test")
    assert "no perf support" in support.reason and support.args == ()

    result = profile_under_load(sys.executable, support, "epoll", 18080, tmp_path)

    assert result.status == "ok", result.message
    assert result.python_method == "none" and support.reason in result.notes
    assert result.svg.stat().st_size > 0
    frames = frame_names(result)
    assert frames & set(NETWORK_FUNCTIONS), "no kernel networking function in the profile"
    assert not any(frame.startswith("py::") for frame in frames)


def test_profile_shows_python_functions_from_servers_and_kernel_networking(python_profiles) -> None:
    for kind, result in python_profiles.items():
        assert result.status == "ok", f"{kind}: {result.message}"
        assert result.python_method in ("perf_jit", "perf")
        svg = result.svg.read_text()
        assert svg.startswith("<?xml") and "<svg" in svg
        assert re.search(r"py::[\w.<>]+:\S*/servers/\w+\.py", svg), f"{kind}: no Python function from servers/"
        assert any(function in svg for function in NETWORK_FUNCTIONS), f"{kind}: no kernel networking function"
        assert read_folded(result.folded), f"{kind}: no folded stacks"


def test_breakdown_shares_sum_to_100_and_render(python_profiles, tmp_path: Path) -> None:
    breakdowns = {kind: breakdown(result.folded) for kind, result in python_profiles.items()}
    for kind, result in breakdowns.items():
        shares = result.shares()
        assert list(shares) == [category.name for category in CATEGORIES] + [OTHER]
        assert sum(shares.values()) == pytest.approx(100.0)
        assert shares["network"] > 0 and shares["python"] > 0, f"{kind}: {shares}"
    table = markdown_table(breakdowns)
    print("\n" + table)
    assert table.count("\n") == 2 + len(breakdowns)
    plot = plot_breakdown(breakdowns, tmp_path / "breakdown.png")
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_differential_flame_graph(python_profiles, tmp_path: Path) -> None:
    out = differential(python_profiles["epoll"].folded, python_profiles["epoll-pool"].folded,
                       tmp_path / "epoll-vs-epoll-pool.svg")
    svg = out.read_text()
    assert "<svg" in svg and re.search(r"samples, [\d.]+%; [+-]?[\d.]+%\)", svg), "no differential frames"


def test_off_cpu_profile_of_a_sleeping_handler_puts_most_blocked_time_in_the_sleep(tmp_path: Path) -> None:
    # epoll runs each /sleep/5 in its one thread, 64 connections waiting their turn: it sleeps nearly always.
    # (threaded's 64 threads sleep too, but on a loaded host they wait as long for wrk's next request.)
    loaded = LoadedServer(sys.executable, PythonSupport((), "none"), "epoll", 18084, load_s=PROFILE_S + 2,
                          path="/sleep/5")
    try:
        off = profile_off_cpu([loaded.pid], PROFILE_S, tmp_path, "epoll-sleep", jit=False)
    finally:
        loaded.stop()
    assert off.status == "ok", off.message
    found = off_cpu_breakdown(off.folded)
    print("\n" + off_cpu_table({"epoll /sleep/5": found}))
    assert found.weights.get("sleep", 0) > 0.5 * found.total, found.weights
    assert found.total > 0.5 * PROFILE_S * 1e9, "the loop thread blocked for less than half the window"
    heaviest = read_folded(off.folded).most_common(1)[0][0].split(";")
    assert any("nanosleep" in frame for frame in heaviest), heaviest
    assert "time_sleep" in heaviest, heaviest  # the handler's time.sleep, not some other wait
    assert off.svg.read_text().startswith("<?xml")


def test_syscalls_per_request_for_epoll() -> None:
    loaded = LoadedServer(sys.executable, PythonSupport((), "none"), "epoll", 18083, load_s=3)
    try:
        counted = count_syscalls([loaded.pid], SYSCALL_S)
        per_request = counted.per_request(loaded.requests_per_second())
    finally:
        loaded.stop()
    assert counted.count, counted.message
    print(f"\nepoll: {counted.count} syscalls in {SYSCALL_S} s, {per_request:.2f} per request")
    # One epoll_wait may serve many connections, but every request needs its own recv and send.
    assert 0.5 < per_request < 10


def test_without_perf_the_run_ends_with_one_line_saying_what_to_change(tmp_path: Path) -> None:
    missing = "/nonexistent/perf"
    assert "perf not found" in perf_problem(missing)
    assert perf_problem() is None
    result = profile_server([1], 1, tmp_path, "epoll", PythonSupport((), "none", "test"), perf=missing)
    assert (result.status, result.svg, result.folded) == ("unavailable", None, None)
    assert "apt-get install linux-perf" in result.message and "\n" not in result.message
    counted = count_syscalls([1], 0.1, perf=missing)
    assert counted.count is None and "perf not found" in counted.message
