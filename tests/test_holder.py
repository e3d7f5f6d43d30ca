"""The idle-connection holder really holds K connections, counted on the server side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench import verify
from bench.errors import PointFailed
from bench.holder import ACCEPT_STALL_S, QUEUE_LIMIT
from bench.network import Namespaces
from bench.runners import ProcessRunner
from bench.sweep import hold_idle
from netns import ns
from netns.config import Topology

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
        assert report == report | {"requested": 2000, "held": 2000, "failed": 0, "errors": {}}
        assert report["rss_kib"] > report["rss_kib_before"] > 0  # its own memory, before and holding them
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


def server_side_peers(port: int) -> Counter[str]:
    """Established connections at the server's `port`, counted by the client address they come from."""
    state = ns.run("sk-server", ["ss", "-Htn", "state", "established", f"sport = :{port}"],
                   capture_output=True, text=True, check=True)
    return Counter(line.split()[-1].rsplit(":", 1)[0] for line in state.stdout.splitlines())


def connections_of(pid: int) -> int:
    """The sockets process `pid` holds, less its listener: the connections it has accepted."""
    fds = f"/proc/{pid}/fd"
    return sum(os.readlink(f"{fds}/{fd}").startswith("socket:") for fd in os.listdir(fds)) - 1


def extra_addresses() -> list[str]:
    done = subprocess.run([sys.executable, str(ROOT / "netns" / "setup.py"), "status", "--json"],
                          capture_output=True, text=True, timeout=30)
    report = json.loads(done.stdout)
    assert report["healthy"], report["problems"]  # the extra addresses are ours, not strays
    return report["links"][1]["extra_addresses"]


def test_past_one_holder_and_one_address_several_of_each_hold_them_all_and_the_server_counts_every_one() -> None:
    """300 connections with room for 100 per holder and 200 per source address: 3 holders, 2 addresses."""
    topo = Topology()
    net = Namespaces(topo)
    runner = ProcessRunner(topo, server_cpus=(0,), client_cpu=1)
    port = net.free_port()
    try:
        runner.start_server("epoll", topo.server_addr, port)
        assert verify.wait_until_answering(net, port, runner.server_exit_code, 10) is None
        (server_pid,) = runner.server_pids()
        idle = hold_idle(runner, net, port, 300, per_holder=100, per_address=200)
        try:
            figures = idle.figures
            assert (figures["idle_held"], figures["idle_on_server"]) == (300, 300)
            assert (figures["idle_holders"], figures["idle_sources"]) == (3, 2)
            assert [p.poll() for p in idle.connections.processes] == [None] * 3  # all three still hold theirs
            extra = topo.extra_client_addrs(1)[0]
            assert server_side_peers(port) == {f"[{topo.client_addr}]": 200, f"[{extra}]": 100}
            assert settle(300, lambda: connections_of(server_pid)) == 300  # accepted, not just queued
            assert extra_addresses() == [f"{extra}/128"]
            assert figures["idle_server_rss_kib"] > 0 and figures["idle_server_kib_per_connection"] is not None
        finally:
            idle.close()
        assert extra_addresses() == []
        assert settle(0, lambda: sum(server_side_peers(port).values())) == 0
    finally:
        runner.stop()


def test_a_server_that_stops_accepting_fails_the_point_in_seconds_not_the_holders_timeout() -> None:
    """blocking serves its first connection until it closes: the rest wait in its accept queue, which fills."""
    topo = Topology()
    net = Namespaces(topo)
    runner = ProcessRunner(topo, server_cpus=(0,), client_cpu=1)
    port = net.free_port()
    try:
        runner.start_server("blocking", topo.server_addr, port)
        assert verify.wait_until_answering(net, port, runner.server_exit_code, 10) is None
        started = time.monotonic()
        with pytest.raises(PointFailed, match=r"the server stopped accepting: 2,0\d\d of 2,500 idle connections "
                                              r"waited in its accept queue, none taken for 3 s"):
            hold_idle(runner, net, port, QUEUE_LIMIT + 452)
        assert time.monotonic() - started < 4 * ACCEPT_STALL_S + 5  # the holder's stall, then the settling's
    finally:
        runner.stop()
