"""Hold K idle keep-alive connections open to a server (the C10K experiment).

    python3 -m bench.holder --host fd00:5a::1 --port 8080 --count 5000 [--timeout 30]

Run inside the client namespace beside wrk: the server must keep K registered
but silent descriptors while it serves wrk's small active set, which is what
separates select/poll (cost grows with K) from epoll (cost grows with activity).

Connections are opened in bounded batches so the server's accept backlog is not
flooded (SYN retries would add seconds). When all are settled it prints one JSON
line (`held`, `failed`, `errors`, `seconds`) and holds them until SIGTERM/SIGINT
or stdin closes, then prints a second line (`closed_by_server`: those the server
hung up on, e.g. select refusing descriptors past FD_SETSIZE) and exits 0.

`IdleConnections` starts and stops holders from the benchmark (several processes
when K exceeds what one process may open).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from netns import ns
from servers.base import raise_open_file_limit

BATCH = 256  # connections in flight at once; well under any listen backlog we start servers with
PER_PROCESS = 15_000  # below the 20,000 open files one process may have on our hosts
OPEN_TIMEOUT_S = 60.0
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class HoldReport:
    requested: int
    held: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def open_connections(host: str, port: int, count: int, timeout: float) -> tuple[list[socket.socket], HoldReport]:
    """Connect `count` sockets in batches; each batch waits at most until the deadline."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    report = HoldReport(requested=count)
    errors: Counter[str] = Counter()
    held: list[socket.socket] = []
    started = time.monotonic()
    deadline = started + timeout
    poller = select.epoll()
    try:
        while len(held) + report.failed < count and time.monotonic() < deadline:
            pending: dict[int, socket.socket] = {}
            for _ in range(min(BATCH, count - len(held) - report.failed)):
                try:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                except OSError as err:  # e.g. EMFILE: counted, like any other failure
                    errors[errno.errorcode.get(err.errno, str(err.errno))] += 1
                    report.failed += 1
                    continue
                sock.setblocking(False)
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
    """Sockets the server has hung up on (readable with EOF or reset)."""
    closed = 0
    for sock in held:
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
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
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed to open them all")
    args = parser.parse_args(argv)
    limit = raise_open_file_limit()
    if args.count > limit - 16:
        parser.error(f"--count {args.count} exceeds this process's open-file limit ({limit}); "
                     "split the connections over several holders")
    held, report = open_connections(args.host, args.port, args.count, args.timeout)
    print(json.dumps(asdict(report)), flush=True)
    wait_until_told_to_stop()
    print(json.dumps({"closed_by_server": count_closed_by_server(held)}), flush=True)
    for sock in held:
        sock.close()
    return 0


class IdleConnections:
    """K idle connections from the client namespace to [host]:port, held by holder processes."""

    def __init__(self, namespace: str, host: str, port: int, count: int) -> None:
        self.namespace, self.host, self.port, self.count = namespace, host, port, count
        self.processes: list[subprocess.Popen] = []

    def open(self) -> HoldReport:
        """Start the holders and wait (bounded by their own timeout) until every connection is settled."""
        chunks = [min(PER_PROCESS, self.count - start) for start in range(0, self.count, PER_PROCESS)]
        for chunk in chunks:
            self.processes.append(ns.popen(
                self.namespace,
                [sys.executable, "-m", "bench.holder", "--host", self.host, "--port", str(self.port),
                 "--count", str(chunk), "--timeout", str(OPEN_TIMEOUT_S)],
                cwd=REPO_ROOT, parent_death_signal=signal.SIGKILL,  # bench killed: its holders too
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
            ))
        total = HoldReport(requested=self.count)
        errors: Counter[str] = Counter()
        for process in self.processes:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"an idle-connection holder exited with code {process.wait()} before reporting")
            report = HoldReport(**json.loads(line))
            total.held += report.held
            total.failed += report.failed
            total.seconds = max(total.seconds, report.seconds)
            errors.update(report.errors)
        total.errors = dict(errors)
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
