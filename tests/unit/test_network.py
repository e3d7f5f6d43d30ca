"""bench.network's commands, as the containers of a run over several machines run them (here on loopback)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import network

ROOT = Path(__file__).resolve().parents[2]


def command(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bench.network", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=True)
    return done.stdout


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"Hello, World!" if self.path == "/" else b"x" * 300
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_counters_name_the_interface_holding_the_address():
    for address in ("127.0.0.1", "::1"):
        found = json.loads(command("counters", address))
        assert found["interface"] == "lo" and set(found["counters"]) == set(network.COUNTERS)
    assert json.loads(command("counters", "192.0.2.77")) is None  # TEST-NET-1: nobody's


def test_free_port_is_bindable(server):
    port = int(command("free-port", "127.0.0.1"))
    assert 0 < port < 65536 and port != server


def test_fetch_carries_status_headers_and_body(server):
    found = json.loads(command("fetch", "127.0.0.1", str(server), "/bytes", "5"))
    assert (found["status"], found["version"], found["headers"]["content-length"]) == (200, 11, "300")
    assert base64.b64decode(found["body"]) == b"x" * 300
    refused = json.loads(command("fetch", "127.0.0.1", str(int(command("free-port", "127.0.0.1"))), "/", "5"))
    assert "ConnectionRefusedError" in refused["error"]


def test_machines_read_the_answers_of_the_containers(server):
    """Machines over plain subprocesses standing in for the server's and the client's containers."""
    def here(args):
        return command(*args)
    machines = network.Machines("127.0.0.1", on_server=here, on_client=here)
    assert machines.traffic.startswith("lo, the server host's interface holding 127.0.0.1")
    response = machines.fetch(server, "/", 5)
    assert (response.status, response.body) == (200, b"Hello, World!")
    before = machines.counters()
    machines.fetch(server, "/", 5)
    assert machines.counters()["tx_bytes"] > before["tx_bytes"]
    with pytest.raises(OSError, match="ConnectionRefused"):
        machines.fetch(machines.free_port(), "/", 5)
