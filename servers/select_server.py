"""select: select(2) over sets of descriptors, which must stay below FD_SETSIZE: a connection above is answered 503."""

import select
import socket
from collections.abc import Iterable

from servers.base import READ, WRITE, EventLoopServer, Settings, warn_once

FD_SETSIZE = 1024


class SelectServer(EventLoopServer):
    def __init__(self, listener: socket.socket, settings: Settings) -> None:
        super().__init__(listener, settings)
        self.readers: set[int] = set()
        self.writers: set[int] = set()

    def admit(self, sock: socket.socket) -> bool:
        if sock.fileno() < FD_SETSIZE:
            return True
        warn_once("fd_setsize", f"select: answering 503 to connections on descriptors >= FD_SETSIZE ({FD_SETSIZE}), "
                  f"first {sock.fileno()} (reported once)")
        return False

    def register(self, fd: int, events: int) -> None:
        self.modify(fd, events)

    def modify(self, fd: int, events: int) -> None:
        (self.readers.add if events & READ else self.readers.discard)(fd)
        (self.writers.add if events & WRITE else self.writers.discard)(fd)

    def unregister(self, fd: int) -> None:
        self.readers.discard(fd)
        self.writers.discard(fd)

    def wait(self, timeout: float) -> Iterable[tuple[int, int]]:
        readable, writable, _ = select.select(self.readers, self.writers, (), timeout)
        return [(fd, READ) for fd in readable] + [(fd, WRITE) for fd in writable]
