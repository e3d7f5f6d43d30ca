"""The idle-connection holder really holds K connections, counted on the server side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netns import ns

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("topology")  # skips without root

SERVER_ADDR = "fd00:5a::1"
PORT = 18181


def start_server(kind: str) -> subprocess.Popen:
    server = ns.popen("sk-server", [sys.executable, "-m", "servers", kind, "--host", SERVER_ADDR, "-p", str(PORT)],
                      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not listening():
        assert server.poll() is None and time.monotonic() < deadline, "server did not start listening"
        time.sleep(0.05)
    return server


def listening() -> bool:
    state = ns.run("sk-server", ["ss", "-Htln", f"sport = :{PORT}"], capture_output=True, text=True)
    return bool(state.stdout.strip())


def established_on_server() -> int:
    state = ns.run("sk-server", ["ss", "-Htn", "state", "established", f"sport = :{PORT}"],
                   capture_output=True, text=True)
    return len(state.stdout.splitlines())


def hold(count: int) -> subprocess.Popen:
    return ns.popen("sk-client", [sys.executable, "-m", "bench.holder", "--host", SERVER_ADDR, "--port", str(PORT),
                                  "--count", str(count), "--timeout", "30"],
                    cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def settle(expected: int, read) -> int:
    """Server-side counts lag the client's by an accept loop: wait (bounded) until they agree."""
    deadline = time.monotonic() + 10
    while (value := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def stop(process: subprocess.Popen) -> dict:
    process.terminate()
    last = json.loads(process.stdout.readlines()[-1])
    assert process.wait(timeout=10) == 0
    return last


def test_holder_holds_k_connections_counted_by_the_server() -> None:
    server = start_server("epoll")
    try:
        fds_before = len(os.listdir(f"/proc/{server.pid}/fd"))
        holder = hold(2000)
        report = json.loads(holder.stdout.readline())
        assert report == {"requested": 2000, "held": 2000, "failed": 0, "errors": {}, "seconds": report["seconds"]}
        assert settle(2000, established_on_server) == 2000
        assert settle(fds_before + 2000, lambda: len(os.listdir(f"/proc/{server.pid}/fd"))) == fds_before + 2000
        assert stop(holder) == {"closed_by_server": 0}
        assert settle(fds_before, lambda: len(os.listdir(f"/proc/{server.pid}/fd"))) == fds_before
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_select_server_hangs_up_on_descriptors_past_fd_setsize() -> None:
    server = start_server("select")
    try:
        holder = hold(1100)
        assert json.loads(holder.stdout.readline())["held"] == 1100
        # Descriptors 0-2, the listener and ~1020 connections fit under 1024; the rest are refused.
        time.sleep(1)
        closed = stop(holder)["closed_by_server"]
        assert 60 <= closed <= 100, closed
        assert server.poll() is None, "the select server must survive descriptors past FD_SETSIZE"
    finally:
        server.terminate()
        server.wait(timeout=10)
