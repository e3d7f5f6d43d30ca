"""poll: poll(2) over an array of descriptors, rebuilt by the kernel on every call."""

import select
import socket
from collections.abc import Iterable

from servers.base import EventLoopServer, Settings


class PollServer(EventLoopServer):
    def __init__(self, listener: socket.socket, settings: Settings) -> None:
        super().__init__(listener, settings)
        self.poller = select.poll()

    def register(self, fd: int, events: int) -> None:
        self.poller.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self.poller.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self.poller.unregister(fd)

    def wait(self, timeout: float) -> Iterable[tuple[int, int]]:
        return self.poller.poll(timeout * 1000)  # milliseconds
