"""epoll: level-triggered epoll(7); the kernel keeps the interest list between calls."""

import select
import socket
from collections.abc import Iterable

from servers.base import EventLoopServer, Settings


class EpollServer(EventLoopServer):
    max_events = -1  # as many as are ready

    def __init__(self, listener: socket.socket, settings: Settings) -> None:
        super().__init__(listener, settings)
        self.epoll = select.epoll()

    def register(self, fd: int, events: int) -> None:
        self.epoll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self.epoll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self.epoll.unregister(fd)

    def wait(self, timeout: float) -> Iterable[tuple[int, int]]:
        return self.epoll.poll(timeout, self.max_events)

    def close(self) -> None:
        super().close()
        self.epoll.close()
