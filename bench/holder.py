"""Hold K idle keep-alive connections open to a server (the C10K and C100K experiment).

    python3 -m bench.holder --host fd00:5a::1 --port 8080 --count 5000 [--source ADDR]
                            [--server-ns sk-server] [--timeout 30]

Run inside the client namespace beside wrk: the server must keep K registered
but silent descriptors while it serves wrk's small active set, which is what
separates select/poll (cost grows with K) from epoll (cost grows with activity).

Connections are opened in bounded batches, and with --server-ns no batch starts
while the server's accept queue may hold more than QUEUE_LIMIT, so its listen
backlog is never flooded (dropped handshakes would cost seconds of SYN retries).
--source binds them to one of the client's addresses (each source address has
only 64k ports towards the server's one port). When all are settled it prints
one JSON line (`held`, `failed`, `errors`, `seconds`, its resident set before
and after) and holds them until SIGTERM/SIGINT or stdin closes, then prints a
second line (`closed_by_server`: those the server hung up on, e.g. select
refusing descriptors past FD_SETSIZE) and exits 0.

`IdleConnections` starts and stops holders from the benchmark: as many
processes as one process's open-file limit requires, each bound to one of as
many source addresses as the ports require, one after the other.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import procfs
from netns import ns
from servers.base import raise_open_file_limit

BATCH = 256  # connections in flight at once
# Connections left waiting in the server's accept queue at most (with --server-ns): half the backlog of
# 4,096 every server here listens with, so a slow accept loop never makes the kernel drop handshakes.
QUEUE_LIMIT = 2048
# The accept queue stayed this long without room for a batch: the server has stopped accepting (the blocking
# model serves one connection until it closes), so the rest are not opened (waiting would take the whole timeout).
ACCEPT_STALL_S = 3.0
PER_HOLDER = 15_000  # below the 20,000 open files one process may have on our hosts
# Connections from one source address to the server's one port. The client namespace has 64,512 ports,
# but connect() searches them for a free one per (source, destination), and that search grows slow as
# they fill: here 100,000 connections over two addresses took 112 s to open (a hand-run, no results file kept),
# over seven 4.3 s (results/2026-12-01/c100k: reuseport's idle_open_s).
PER_ADDRESS = 15_000
OPEN_TIMEOUT_S = 60.0
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Python 3.12+ names it
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class HoldReport:
    requested: int
    held: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rss_kib_before: int = 0  # the holders' resident set before they opened anything
    rss_kib: int = 0  # ... and with the connections open: the difference is what holding them costs here


def connecting_socket(family: int, source: str | None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    # Closed with a reset, not a FIN: no TIME_WAIT left behind to hold ports for the next point.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if source is not None:
        # The port is chosen at connect(), per (source, destination): bind() alone would need a port
        # unique on the whole address and run out sooner.
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
    sock.setblocking(False)
    return sock


def accept_queue(namespace: str, port: int) -> int:
    """Connections waiting in the accept queues of `port`'s listeners in `namespace` (ss's Recv-Q)."""
    listing = ns.run(namespace, ["ss", "-Hltn", f"( sport = :{port} )"], capture_output=True, text=True,
                     timeout=30, check=True)
    return sum(int(line.split()[1]) for line in listing.stdout.splitlines())


def open_connections(host: str, port: int, count: int, timeout: float, source: str | None = None,
                     server_ns: str | None = None) -> tuple[list[socket.socket], HoldReport]:
    """Connect `count` sockets in batches; each batch waits at most until the deadline (and, with
    `server_ns`, until the server has accepted all but a batch of those before it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    report = HoldReport(requested=count)
    errors: Counter[str] = Counter()
    held: list[socket.socket] = []
    started = time.monotonic()
    deadline = started + timeout
    poller = select.epoll()
    room = 0  # connections that may still be opened before the accept queue must be looked at again
    try:
        while len(held) + report.failed < count and time.monotonic() < deadline:
            # One look lets several batches go: a look costs tens of milliseconds with 100,000 sockets about.
            waiting_since, stalled = time.monotonic(), False
            while server_ns is not None and room < BATCH and time.monotonic() < deadline:
                room = QUEUE_LIMIT - accept_queue(server_ns, port)
                if room < BATCH:
                    if stalled := time.monotonic() - waiting_since >= ACCEPT_STALL_S:
                        break
                    time.sleep(0.01)
            if stalled:
                errors["accept queue full"] += count - len(held) - report.failed
                report.failed = count - len(held)
                break
            room -= BATCH
            pending: dict[int, socket.socket] = {}
            for _ in range(min(BATCH, count - len(held) - report.failed)):
                try:
                    sock = connecting_socket(family, source)
                except OSError as err:  # e.g. EMFILE, EADDRNOTAVAIL: counted, like any other failure
                    errors[errno.errorcode.get(err.errno, str(err.errno))] += 1
                    report.failed += 1
                    continue
                if sock.connect_ex((host, port)) not in (0, errno.EINPROGRESS):
                    errors["connect"] += 1
                    report.failed += 1
                    sock.close()
                    continue
                pending[sock.fileno()] = sock
                poller.register(sock, select.EPOLLOUT)
            while pending and time.monotonic() < deadline:
                for fd, _ in poller.poll(max(0.0, deadline - time.monotonic())):
                    sock = pending.pop(fd)
                    poller.unregister(fd)
                    status = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if status == 0:
                        held.append(sock)
                    else:
                        errors[errno.errorcode.get(status, str(status))] += 1
                        report.failed += 1
                        sock.close()
            for sock in pending.values():  # still connecting at the deadline
                errors["timeout"] += 1
                report.failed += 1
                sock.close()
    finally:
        poller.close()
    report.held = len(held)
    report.errors = dict(errors)
    report.seconds = round(time.monotonic() - started, 3)
    return held, report


def count_closed_by_server(held: list[socket.socket]) -> int:
    """Sockets the server has hung up on: EOF, a reset, or an answer nobody asked for (a server turning a
    connection away, like select past FD_SETSIZE, answers 503 before it closes)."""
    closed = 0
    for sock in held:
        try:
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"" (EOF) or the unasked answer's first byte
            closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def wait_until_told_to_stop() -> None:
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while not stop:
        readable, _, _ = select.select([sys.stdin], [], [], 0.2)
        if readable and not sys.stdin.buffer.read1(4096):
            return  # the parent closed our stdin: it is gone or done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.holder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--source", help="the client address to connect from (default: the kernel's choice)")
    parser.add_argument("--server-ns", help="the server's namespace: pace the batches by its accept queue")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed to open them all")
    args = parser.parse_args(argv)
    limit = raise_open_file_limit()
    if args.count > limit - 16:
        parser.error(f"--count {args.count} exceeds this process's open-file limit ({limit}); "
                     "split the connections over several holders")
    before = procfs.rss_kib("self")
    held, report = open_connections(args.host, args.port, args.count, args.timeout, args.source, args.server_ns)
    report.rss_kib_before, report.rss_kib = before, procfs.rss_kib("self")
    print(json.dumps(asdict(report)), flush=True)
    wait_until_told_to_stop()
    print(json.dumps({"closed_by_server": count_closed_by_server(held)}), flush=True)
    for sock in held:
        sock.close()
    return 0


def plan(count: int, per_holder: int = PER_HOLDER, per_address: int = PER_ADDRESS) -> list[tuple[int, int]]:
    """(source address index, connections) per holder: each address takes up to `per_address`, each
    holder up to `per_holder` of one address's."""
    chunks = []
    for address, start in enumerate(range(0, count, per_address)):
        share = min(per_address, count - start)
        chunks += [(address, min(per_holder, share - taken)) for taken in range(0, share, per_holder)]
    return chunks


def addresses_needed(count: int, per_address: int = PER_ADDRESS) -> int:
    return max(1, math.ceil(count / per_address))


class IdleConnections:
    """K idle connections from the client namespace to [host]:port, held by holder processes.

    `sources` are the client addresses to spread them over (`addresses_needed` of them); holders start one
    after the other, so no more than one batch is ever in flight.
    """

    def __init__(self, namespace: str, host: str, port: int, count: int, sources: list[str],
                 server_ns: str | None = None, per_holder: int = PER_HOLDER, per_address: int = PER_ADDRESS) -> None:
        self.namespace, self.host, self.port, self.count = namespace, host, port, count
        self.server_ns = server_ns
        self.chunks = plan(count, per_holder, per_address)
        if len(sources) < (needed := addresses_needed(count, per_address)):
            raise ValueError(f"{count} connections need {needed} source addresses, {len(sources)} given")
        self.sources = sources
        self.processes: list[subprocess.Popen] = []

    def open(self) -> HoldReport:
        """Start the holders and wait (bounded by their own timeout) until every connection is settled."""
        total = HoldReport(requested=self.count)
        errors: Counter[str] = Counter()
        started = time.monotonic()
        for address, chunk in self.chunks:
            command = [sys.executable, "-m", "bench.holder", "--host", self.host, "--port", str(self.port),
                       "--count", str(chunk), "--source", self.sources[address], "--timeout", str(OPEN_TIMEOUT_S)]
            if self.server_ns is not None:
                command += ["--server-ns", self.server_ns]
            process = ns.popen(self.namespace, command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, start_new_session=True,
                               parent_death_signal=signal.SIGKILL)  # bench killed: its holders too
            self.processes.append(process)
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"an idle-connection holder exited with code {process.wait()} before reporting")
            report = HoldReport(**json.loads(line))
            total.held += report.held
            total.failed += report.failed
            total.rss_kib_before += report.rss_kib_before
            total.rss_kib += report.rss_kib
            errors.update(report.errors)
        total.errors = dict(errors)
        total.seconds = round(time.monotonic() - started, 3)
        return total

    def close(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # nothing to say any more: just release the sockets
            except ProcessLookupError:
                pass
            process.wait()
            process.stdout.close()
            process.stdin.close()
        self.processes = []


def established_at(namespace: str, port: int) -> int:
    """TCP connections established to local `port` in `namespace`, as the kernel counts them (ss)."""
    listing = ns.run(namespace, ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                     capture_output=True, text=True, timeout=30, check=True)
    return len(listing.stdout.splitlines())


if __name__ == "__main__":
    sys.exit(main())
