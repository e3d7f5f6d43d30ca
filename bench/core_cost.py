"""What the HTTP core and the base loop cost per request, in-process: no veth, no wrk, no kernel scheduling.

    python3 -m bench.core_cost [REQUESTS]

A client socket sends one `GET /` and reads its answer, the server side answers it through one call of
its event handler, REQUESTS times over a socketpair (best of three). Printed per request: the socket
calls alone, the floor's handler, and epoll's (the shared core and base loop) twice — the same request
each time (a kept-alive benchmark client; the core reuses the parse of a repeated request) and a
different one each time (the query string counts up, so every request is parsed). The gaps between the
lines are what each layer costs; wrk's numbers add the kernel's network path and the loop's waits.
"""

from __future__ import annotations

import select
import socket
import sys
import time
from collections.abc import Callable, Iterator

from servers.base import READ, Peer, Settings, open_listener
from servers.epoll_server import EpollServer
from servers.floor_server import Client, FloorServer, hello

SAME = b"GET / HTTP/1.1\r\nHost: [fd00:5a::1]:8080\r\n\r\n"
SETTINGS = Settings("127.0.0.1", 0)


def varied() -> Iterator[bytes]:
    count = 0
    while True:
        count += 1
        yield b"GET /?n=%d HTTP/1.1\r\nHost: [fd00:5a::1]:8080\r\n\r\n" % count


def sockets_only() -> Callable[[], None]:
    client, server = socket.socketpair()
    answer = hello(0)

    def step() -> None:
        client.send(SAME)
        server.recv(65536)
        server.send(answer)
        client.recv(4096)
    return step


def floor() -> Callable[[], None]:
    loop = FloorServer(open_listener(SETTINGS), SETTINGS)
    client, server = socket.socketpair()
    server.setblocking(False)
    fd, state = server.fileno(), Client(server)
    loop.clients[fd] = state
    loop.epoll.register(fd, select.EPOLLIN)
    answer = hello(int(time.time()))

    def step() -> None:
        client.send(SAME)
        loop.on_ready(fd, state, select.EPOLLIN, answer)
        client.recv(4096)
    return step


def epoll(requests: Iterator[bytes]) -> Callable[[], None]:
    loop = EpollServer(open_listener(SETTINGS), SETTINGS)
    client, server = socket.socketpair()
    server.setblocking(False)
    peer = Peer(server)
    loop.peers[peer.fd] = peer
    loop.register(peer.fd, READ)

    def step() -> None:
        client.send(next(requests))
        loop.on_ready(peer, READ)
        client.recv(4096)
    return step


def per_request_us(step: Callable[[], None], count: int) -> float:
    for _ in range(count // 50):  # warm up
        step()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter_ns()
        for _ in range(count):
            step()
        best = min(best, (time.perf_counter_ns() - started) / count / 1000)
    return best


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 100_000
    cases = {
        "socket calls alone": sockets_only(),
        "floor": floor(),
        "epoll, the same request": epoll(iter(lambda: SAME, None)),
        "epoll, a new request each time": epoll(varied()),
    }
    print(f"Python {sys.version.split()[0]}, {count:,} requests each, best of 3, µs per request:")
    for name, step in cases.items():
        print(f"  {name:32s} {per_request_us(step, count):5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
