"""Server processes on loopback and a plain socket client: what every server test suite uses."""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import procfs
from servers.kinds import KINDS

ROOT = Path(__file__).resolve().parents[1]

ALL_KINDS = list(KINDS)
# The conformance suite's servers: every kind, and asyncio on uvloop where uvloop is installed.
VARIANTS = {kind: [kind] for kind in KINDS}
if importlib.util.find_spec("uvloop"):
    VARIANTS["asyncio-uvloop"] = ["asyncio", "--uvloop"]


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """A plain socket client that reads HTTP/1.1 responses framed by Content-Length."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, receive_buffer: int | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.connect((host, port))
        self.buffer = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(self, path: str = "/", **options: object) -> HttpResponse:
        self.send(request(path, **options))
        return self.read_response(head_only=options.get("method") == "HEAD")

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    def read_response(self, head_only: bool = False) -> HttpResponse:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)}
        length = 0 if head_only else int(headers["content-length"])
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return HttpResponse(int(status_line.split(" ")[1]), headers, body)

    def closed_by_server(self) -> bool:
        """True once the server has closed its end (end of stream or reset) before the timeout."""
        try:
            while data := self.sock.recv(65536):
                self.buffer += data
        except ConnectionResetError:
            pass
        except TimeoutError:
            return False
        return True


def request(path: str = "/", method: str = "GET", version: str = "HTTP/1.1", headers: str = "",
            body: bytes = b"") -> bytes:
    return f"{method} {path} {version}\r\nHost: test\r\n{headers}\r\n".encode() + body


@dataclass
class RunningServer:
    kind: str
    host: str
    port: int
    process: subprocess.Popen
    stderr_path: Path

    def client(self, **options: object) -> Client:
        return Client(self.host, self.port, **options)

    def pids(self) -> list[int]:
        """The server process and its worker processes (reuseport)."""
        return [found.pid for found in procfs.process_tree(self.process.pid)]

    def open_descriptors(self) -> int:
        return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in self.pids())

    def rss_bytes(self) -> int:
        """Resident memory of the server and its worker processes."""
        return sum(procfs.rss_kib(pid) for pid in self.pids()) * 1024

    def cpu_seconds(self) -> float:
        """CPU time of the server and its live worker processes (not of workers already reaped)."""
        return sum(found.utime + found.stime for found in procfs.process_tree(self.process.pid)) / procfs.CLOCK_TICKS

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, signal_number: int = signal.SIGTERM) -> int:
        """Signal the server, wait for it; its exit status (its stderr goes to ours if it is not 0)."""
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
        try:
            status = self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        if status != 0:
            print(f"{self.kind} exited with {status}; its stderr:\n{self.stderr()}", file=sys.stderr)
        self.stderr_path.unlink()
        return status


def free_port(host: str) -> int:
    """A free port below the ephemeral range (32768-), so no client connection takes it before the server binds."""
    while True:
        port = random.randrange(20_000, 32_768)
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, port))
                return port
            except OSError:
                continue


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servers", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)


def start_server(kind: str, *options: str, host: str = "127.0.0.1",
                 preexec_fn: Callable[[], None] | None = None) -> RunningServer:
    port = free_port(host)
    stderr_file = tempfile.NamedTemporaryFile(prefix="server-stderr-", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "servers", kind, "--host", host, "-p", str(port), *options],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr_file, preexec_fn=preexec_fn,
    )
    stderr_file.close()
    server = RunningServer(kind, host, port, process, Path(stderr_file.name))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{kind} exited at start with {server.stop()}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.02)
    server.stop()
    pytest.fail(f"{kind} did not accept connections within 10 s")


def settled_descriptor_count(server: RunningServer, target: int | None = None, timeout: float = 5.0) -> int:
    """The server's descriptor count once it stops changing (or reaches target)."""
    deadline = time.monotonic() + timeout
    count = server.open_descriptors()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        previous, count = count, server.open_descriptors()
        if (count <= target) if target is not None else count == previous:
            break
    return count


def assert_refused_while_others_are_served(server: RunningServer, payload: bytes, status: int) -> None:
    """`payload` is answered `status` and its connection closed; other clients are served before and after."""
    # A client connected before keeps being served, except by blocking, which holds one client at a time.
    bystander = None if server.kind == "blocking" else server.client()
    if bystander:
        assert bystander.get("/").status == 200
    with server.client() as client:
        client.send(payload)
        assert client.read_response().status == status
        assert client.closed_by_server()
    if bystander:
        with bystander:
            assert bystander.get("/").status == 200
    with server.client() as client:
        assert client.get("/").status == 200
