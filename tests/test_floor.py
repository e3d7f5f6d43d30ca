"""The floor reference on loopback: plaintext only, pipelining, 400 for anything else, and it keeps serving."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


@pytest.fixture()
def floor():
    process = subprocess.Popen([sys.executable, "-m", "servers", "floor", "--host", "127.0.0.1", "-p", "0"],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    port = int(process.stdout.readline().split(":")[1].split()[0])
    yield process, port
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0


def exchange(port: int, data: bytes, answers: int) -> bytes:
    """Send `data`, read until `answers` responses (or the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while received.count(b"HTTP/1.1 ") < answers or not received.endswith((b"World!", b"Request\n")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_plaintext_pipelined_and_split(floor):
    _, port = floor
    answer = exchange(port, GET * 100, 100)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 100 and answer.count(b"Content-Length: 13\r\n") == 100
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for byte in GET:  # a request a byte at a time
            sock.send(bytes([byte]))
        assert sock.recv(4096).endswith(b"\r\n\r\nHello, World!")


@pytest.mark.parametrize("request_bytes", [b"POST / HTTP/1.1\r\n\r\n", b"GET /x HTTP/1.1\r\n\r\n",
                                           b"GET / HTTP/1.0\r\n\r\n", b"\x00garbage\r\n\r\n", b"G" * 9000])
def test_anything_else_is_refused_and_others_still_served(floor, request_bytes):
    process, port = floor
    fds = len(os.listdir(f"/proc/{process.pid}/fd"))
    answer = exchange(port, GET + request_bytes, 2)
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"HTTP/1.1 400 Bad Request" in answer
    assert exchange(port, GET, 1).endswith(b"Hello, World!")
    deadline = time.monotonic() + 5
    while len(os.listdir(f"/proc/{process.pid}/fd")) != fds:
        assert time.monotonic() < deadline, "a refused connection's descriptor leaked"
        time.sleep(0.05)
