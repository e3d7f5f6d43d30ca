"""Before a server is benchmarked: wait until it answers, then check that it answers right.

Requests go the way wrk's do (bench.network): from the client namespace over the veth pair, or from a
client engine's container to the server machine.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable

from bench.config import Workload
from bench.network import Network, Response

HELLO = b"Hello, World!"
REQUEST_TIMEOUT_S = 5.0


def wait_until_answering(net: Network, port: int, exit_code: Callable[[], int | None],
                         timeout_s: float) -> str | None:
    """None once GET / gets any answer; else why not (the server exited, or the deadline passed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if (code := exit_code()) is not None:
            return f"server exited with code {code} before answering"
        try:
            net.fetch(port, "/", 1.0)
            return None
        except (OSError, http.client.HTTPException) as error:
            if time.monotonic() > deadline:
                return f"server did not answer within {timeout_s:.0f} s: {error}"
        time.sleep(0.1)


def problems(net: Network, port: int, workload: Workload) -> list[str]:
    """What is wrong with the server's answers to / and to the workload's path (empty: all right)."""
    found = _check(net.fetch(port, "/", REQUEST_TIMEOUT_S), "/", expected_body=HELLO, content_type="text/plain")
    if workload.path != "/":
        found += _check(net.fetch(port, workload.path, REQUEST_TIMEOUT_S), workload.path,
                        expected_length=workload.body_size)
    return found


def _check(response: Response, path: str, expected_body: bytes | None = None,
           content_type: str | None = None, expected_length: int | None = None) -> list[str]:
    found = []
    if response.status != 200:
        found.append(f"{path}: status {response.status}, expected 200")
    if response.version != 11:
        found.append(f"{path}: HTTP version {response.version / 10}, expected 1.1")
    length = response.headers.get("content-length")
    if length != str(len(response.body)):
        found.append(f"{path}: Content-Length {length!r} but {len(response.body)} body bytes")
    if content_type and not response.headers.get("content-type", "").startswith(content_type):
        found.append(f"{path}: Content-Type {response.headers.get('content-type')!r}, expected {content_type}")
    if expected_body is not None and response.body != expected_body:
        found.append(f"{path}: body {response.body[:40]!r}, expected {expected_body!r}")
    if expected_length is not None and len(response.body) != expected_length:
        found.append(f"{path}: {len(response.body)} body bytes, expected {expected_length}")
    return found
