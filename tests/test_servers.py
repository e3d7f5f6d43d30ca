"""Every server model as a real process on loopback: HTTP conformance, then the behaviour that defines each model."""

from __future__ import annotations

import resource
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime

import pytest
from servers_harness import (
    ALL_KINDS,
    VARIANTS,
    Client,
    RunningServer,
    assert_refused_while_others_are_served,
    request,
    run_cli,
    settled_descriptor_count,
    start_server,
)

from bench import subjects

# From the descriptions (bench/subjects.py): reuseport's overlap depends on its worker count (a CPU each).
SERIAL_HANDLER_KINDS = [k for k in ALL_KINDS if subjects.get(k).handlers == "serial"]
PARALLEL_HANDLER_KINDS = [k for k in ALL_KINDS if subjects.get(k).handlers == "threads"]


@pytest.fixture(scope="module", params=VARIANTS)
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    running = start_server(*VARIANTS[request.param])
    yield running
    assert running.stop() == 0


# --- conformance: every kind -------------------------------------------------------------------------


def test_hello(server: RunningServer) -> None:
    with server.client() as client:
        response = client.get("/")
    assert (response.status, response.body) == (200, b"Hello, World!")
    assert response.headers["content-type"] == "text/plain"
    assert response.headers["content-length"] == "13"
    assert abs(parsedate_to_datetime(response.headers["date"]).timestamp() - time.time()) < 5


@pytest.mark.parametrize("size", [0, 1, 16_384, 16_385, 1_000_000])
def test_bytes(server: RunningServer, size: int) -> None:
    with server.client() as client:
        response = client.get(f"/bytes/{size}")
        assert (response.status, len(response.body)) == (200, size)
        assert client.get("/").status == 200  # the body was framed exactly: the connection is still in step


@pytest.mark.parametrize("path", [f"/bytes/{100 * 1024 * 1024 + 1}", "/sleep/60001", "/cpu/10000001"])
def test_parameter_over_its_cap(server: RunningServer, path: str) -> None:
    with server.client() as client:
        assert client.get(path).status in (400, 413)


def test_sleep(server: RunningServer) -> None:
    with server.client() as client:
        started = time.monotonic()
        assert client.get("/sleep/100").status == 200
        assert time.monotonic() - started >= 0.1


def test_cpu(server: RunningServer) -> None:
    cpu_before = server.cpu_seconds()
    with server.client() as client:
        assert client.get("/cpu/200000").status == 200
    assert server.cpu_seconds() - cpu_before >= 0.15  # burnt, not slept


@pytest.mark.parametrize("path", ["/nowhere", "/bytes/ten", "/sleep/", "/cpu/1/2"])
def test_not_found(server: RunningServer, path: str) -> None:
    with server.client() as client:
        assert client.get(path).status == 404
        assert client.closed_by_server()


def test_keep_alive_100_requests(server: RunningServer) -> None:
    with server.client() as client:
        for _ in range(100):
            response = client.get("/")
            assert (response.status, response.body) == (200, b"Hello, World!")
            assert "connection" not in response.headers


def test_pipelining_100_requests_in_one_write(server: RunningServer) -> None:
    with server.client() as client:
        client.send(b"".join(request(f"/bytes/{size}") for size in range(100)))
        sizes = [len(client.read_response().body) for _ in range(100)]
    assert sizes == list(range(100))  # answered in order


def test_request_byte_by_byte(server: RunningServer) -> None:
    with server.client() as client:
        for byte in request("/", headers="X-Slow: yes\r\n"):
            client.send(bytes([byte]))
            time.sleep(0.001)
        assert client.read_response().body == b"Hello, World!"


def test_http_1_0_closes_unless_asked(server: RunningServer) -> None:
    with server.client() as client:
        response = client.get("/", version="HTTP/1.0")
        assert response.status == 200 and response.headers["connection"].lower() == "close"
        assert client.closed_by_server()
    with server.client() as client:
        for _ in range(3):
            response = client.get("/", version="HTTP/1.0", headers="Connection: keep-alive\r\n")
            assert response.status == 200 and response.headers["connection"].lower() == "keep-alive"


def test_connection_close(server: RunningServer) -> None:
    with server.client() as client:
        response = client.get("/", headers="Connection: close\r\n")
        assert response.status == 200 and response.headers["connection"].lower() == "close"
        assert client.closed_by_server()


def test_head_has_no_body(server: RunningServer) -> None:
    with server.client() as client:
        client.send(request("/", method="HEAD") + request("/bytes/5", method="HEAD") + request("/"))
        head = client.read_response(head_only=True)
        assert (head.status, head.headers["content-length"]) == (200, "13")
        assert client.read_response(head_only=True).headers["content-length"] == "5"
        assert client.read_response().body == b"Hello, World!"  # no stray body bytes came before it


def test_request_body_is_consumed(server: RunningServer) -> None:
    with server.client() as client:
        client.send(request("/", method="POST", headers="Content-Length: 10\r\n") + b"01234")
        time.sleep(0.05)
        client.send(b"56789" + request("/bytes/3"))
        assert client.read_response().body == b"Hello, World!"
        assert client.read_response().body == b"xxx"


def test_large_body_read_slowly(server: RunningServer) -> None:
    size = 10 * 1024 * 1024
    deadline = time.monotonic() + 30
    with server.client(receive_buffer=32 * 1024) as client:
        client.send(request(f"/bytes/{size}"))
        while b"\r\n\r\n" not in client.buffer:
            client.buffer += client.sock.recv(16384)
        received = len(client.buffer.split(b"\r\n\r\n", 1)[1])
        while received < size and time.monotonic() < deadline:
            received += len(client.sock.recv(min(32 * 1024, size - received)))
            time.sleep(0.001)
        assert received == size
        client.buffer = b""
        assert client.get("/").status == 200


def test_200_concurrent_clients_10_requests_each(server: RunningServer) -> None:
    def ten_requests(_: int) -> list[int]:
        with server.client(timeout=60) as client:
            return [client.get("/").status for _ in range(10)]

    with ThreadPoolExecutor(max_workers=200) as pool:
        statuses = [status for result in pool.map(ten_requests, range(200)) for status in result]
    assert statuses == [200] * 2000


ERROR_CASES = {
    "request-line-over-8KiB": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: test\r\n\r\n", 414),
    "headers-over-64KiB": (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    "over-100-fields": (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n", 431),
    "no-version": (b"GET /\r\n\r\n", 400),
    "header-without-colon": (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    "garbage": (b"\x00\xff\xfe garbage\x01\r\n\r\n", 400),
    "bad-content-length": (b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400),
    "http-2.0": (b"GET / HTTP/2.0\r\n\r\n", 505),
    "http-3": (b"GET / HTTP/3\r\n\r\n", 400),  # not HTTP/ DIGIT . DIGIT (RFC 9112 2.3): malformed, not unsupported
    "unknown-method": (b"BREW / HTTP/1.1\r\nHost: test\r\n\r\n", 501),
    "chunked-body": (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_error_answered_and_others_still_served(server: RunningServer, case: str) -> None:
    assert_refused_while_others_are_served(server, *ERROR_CASES[case])


def test_no_descriptor_leak(server: RunningServer) -> None:
    before = settled_descriptor_count(server)

    def one_client(number: int) -> None:
        with server.client() as client:
            if number % 5 == 0:  # leave without reading a large answer, resetting the connection
                client.send(request("/bytes/5000000"))
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif number % 5 == 1:
                client.send(b"BREW / HTTP/1.1\r\n\r\n")
                client.closed_by_server()
            else:
                assert client.get("/").status == 200

    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(one_client, range(50)))
    assert settled_descriptor_count(server, target=before) == before


# --- behaviour that defines the models ---------------------------------------------------------------


def test_an_idle_keep_alive_client_hogs_only_the_blocking_server(server: RunningServer) -> None:
    with server.client() as idle:
        assert idle.get("/").status == 200
        with server.client(timeout=1) as second:
            second.send(request("/"))
            if server.kind != "blocking":
                assert second.read_response().status == 200
                return
            with pytest.raises(TimeoutError):
                second.read_response()
            idle.sock.close()
            second.sock.settimeout(10)
            assert second.read_response().status == 200  # queued, not lost: served once the first client leaves


def test_ten_concurrent_sleeps(server: RunningServer) -> None:
    clients = [server.client() for _ in range(10)]
    start = threading.Barrier(10)

    def sleep_request(client: Client) -> int:
        with client:
            start.wait()
            return client.get("/sleep/100").status

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(sleep_request, clients))
    elapsed = time.monotonic() - started
    assert statuses == [200] * 10
    if server.kind in PARALLEL_HANDLER_KINDS:
        assert elapsed < 0.6, f"{server.kind} took {elapsed:.2f} s: handlers did not overlap"
    elif server.kind in SERIAL_HANDLER_KINDS:
        assert elapsed >= 0.9, f"{server.kind} took {elapsed:.2f} s: handlers overlapped"


# --- process life: addresses, signals, errors --------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_ipv6_loopback(kind: str) -> None:
    running = start_server(kind, host="::1")
    try:
        with running.client() as client:
            assert client.get("/").body == b"Hello, World!"
    finally:
        assert running.stop() == 0


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_signal_stops_promptly_with_connections_held(variant: str, signal_number: int) -> None:
    running = start_server(*VARIANTS[variant])
    busy = running.client()
    busy.send(request("/sleep/5000"))  # a handler blocked in time.sleep
    idle = [running.client() for _ in range(5)]
    time.sleep(0.2)
    started = time.monotonic()
    status = running.stop(signal_number)
    assert time.monotonic() - started < 1.0
    assert status == 0
    for client in [busy, *idle]:
        with client:
            assert client.closed_by_server()


def test_select_survives_descriptors_past_fd_setsize() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    running = start_server("select")
    clients = []
    try:
        for _ in range(1030):
            clients.append(running.client(timeout=2))
        settled_descriptor_count(running)
        assert clients[0].get("/").status == 200
        assert clients[-1].read_response().status == 503  # descriptor >= 1024: refused, as other models refuse
        assert clients[-1].closed_by_server()
        for client in clients:
            client.sock.close()
        clients.clear()
        with running.client() as client:
            assert client.get("/").status == 200
        refusals = [line for line in running.stderr().splitlines() if "FD_SETSIZE" in line]
        assert len(refusals) == 1
    finally:
        for client in clients:
            client.sock.close()
        assert running.stop() == 0
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_list_names_every_kind() -> None:
    assert run_cli("--list").stdout.split() == ALL_KINDS


def one_line_error(result: subprocess.CompletedProcess, status: int, words: str) -> None:
    assert result.returncode == status
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert words in result.stderr


def test_unknown_kind_is_refused_with_the_list() -> None:
    one_line_error(run_cli("kqueue"), 2, ", ".join(ALL_KINDS))


def test_port_in_use() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        one_line_error(run_cli("epoll", "--host", "127.0.0.1", "-p", str(holder.getsockname()[1])), 1, "in use")


@pytest.mark.parametrize("host", ["192.0.2.1", "fd00:5a::dead:beef"])
def test_address_not_on_this_host(host: str) -> None:
    one_line_error(run_cli("epoll", "--host", host, "-p", "8080"), 1, "not on this host")


def test_host_must_be_numeric() -> None:
    one_line_error(run_cli("epoll", "--host", "localhost"), 2, "numeric")


def test_workers_only_where_they_mean_something() -> None:
    one_line_error(run_cli("epoll", "--workers", "4"), 2, "--workers")


def test_uvloop_missing_is_a_clear_error() -> None:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        one_line_error(run_cli("asyncio", "--uvloop", "-p", "0"), 2, "uvloop")
    else:
        pytest.skip("uvloop is installed")
