"""floor: the cheapest loop Python can run on this kernel path; a reference, like nginx, not a model under test.

One level-triggered epoll loop and no HTTP core: every request must be `GET / HTTP/1.1` on a kept-alive
connection and is answered with a pre-built `Hello, World!` (its Date renewed once a second), the answers
to one read in one send. bench verifies it on plaintext only and records its other workloads unsupported.
What it costs per request is what no Python server on this path can avoid: a model's gap to it is what
its HTTP handling and its multiplexing add. Anything else gets 400 and the connection closed; a client
that does not read its answers is not read from (one read's answers at most wait); out of descriptors,
accepting pauses.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from dataclasses import dataclass

from servers.base import RECV_SIZE, Settings, open_listener, warn_once

REQUEST_LINE = b"GET / HTTP/1.1\r\n"
MAX_HEAD = 8 * 1024  # an unfinished request longer than this is refused
ACCEPT_PAUSE_S = 0.1  # out of descriptors: stop watching the listener this long
BODY = b"Hello, World!"
BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nServer: swissknife\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 12\r\nConnection: close\r\n\r\nBad Request\n")


def hello(second: int) -> bytes:
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second)).encode()
    return (b"HTTP/1.1 200 OK\r\nServer: swissknife\r\nDate: %s\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (date, len(BODY), BODY))


@dataclass(slots=True)
class Client:
    sock: socket.socket
    partial: bytes = b""  # the start of a request still arriving
    unsent: bytes = b""
    writing: bool = False  # watched for EPOLLOUT (and not read from) while output waits
    closing: bool = False


class FloorServer:
    takes_workers = False

    def __init__(self, listener: socket.socket, settings: Settings) -> None:
        self.listener = listener
        self.epoll = select.epoll()
        self.clients: dict[int, Client] = {}

    @classmethod
    def create(cls, settings: Settings) -> FloorServer:
        return cls(open_listener(settings), settings)

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def serve(self) -> None:
        self.listener.setblocking(False)
        listener_fd = self.listener.fileno()
        self.epoll.register(listener_fd, select.EPOLLIN)
        second, answer, paused_until = -1, b"", 0.0
        while True:
            events = self.epoll.poll(ACCEPT_PAUSE_S if paused_until else -1)
            if (now := int(time.time())) != second:
                second, answer = now, hello(now)
            if paused_until and time.monotonic() >= paused_until:
                paused_until = 0.0
                self.epoll.register(listener_fd, select.EPOLLIN)
            for fd, event in events:
                if fd == listener_fd:
                    if not self.accept():
                        self.epoll.unregister(listener_fd)
                        paused_until = time.monotonic() + ACCEPT_PAUSE_S
                elif client := self.clients.get(fd):
                    try:
                        self.on_ready(fd, client, event, answer)
                    except OSError:  # reset by the client, or any failure of this one connection
                        self.drop(fd)

    def accept(self) -> bool:
        """Take every waiting connection; False when out of descriptors."""
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return True
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    warn_once("floor accept", f"accept failed: {error.strerror}; pausing (reported once)")
                    return False
                continue  # the client already gave up
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.epoll.register(sock.fileno(), select.EPOLLIN)
            except OSError as error:  # this connection's set-up failed: it alone is closed
                warn_once("floor setup", f"setting up a connection failed: {error.strerror} (reported once)")
                sock.close()
                continue
            self.clients[sock.fileno()] = Client(sock)

    def on_ready(self, fd: int, client: Client, event: int, answer: bytes) -> None:
        if event & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP) and not client.unsent:
            data = client.sock.recv(RECV_SIZE)
            if not data:
                return self.drop(fd)
            *requests, client.partial = (client.partial + data).split(b"\r\n\r\n")
            good = 0
            for request in requests:
                if not request.startswith(REQUEST_LINE):
                    break
                good += 1
            client.unsent = answer * good
            if good < len(requests) or len(client.partial) > MAX_HEAD:
                client.unsent, client.closing = client.unsent + BAD_REQUEST, True
        if client.unsent:
            client.unsent = client.unsent[client.sock.send(client.unsent):]
        if client.closing and not client.unsent:
            return self.drop(fd)
        # While output waits, watch for room to write and read nothing: unread output stays bounded.
        if client.writing != bool(client.unsent):
            client.writing = not client.writing
            self.epoll.modify(fd, select.EPOLLOUT if client.writing else select.EPOLLIN)

    def drop(self, fd: int) -> None:
        client = self.clients.pop(fd)
        self.epoll.unregister(fd)
        client.sock.close()

    def close(self) -> None:
        for client in self.clients.values():
            client.sock.close()
        self.listener.close()
        self.epoll.close()
