"""epoll-pool: the original report's improved server, epoll plus a pool of 10 handler threads.

The main thread waits (at most 10 events a call) and hands each ready
connection to ThreadPoolExecutor(max_workers=10). EPOLLONESHOT disarms a
connection when it is reported, so no two workers ever handle one socket;
the worker re-arms it when done, with EPOLLOUT only while a response is pending.
"""

import socket
from concurrent.futures import ThreadPoolExecutor
from select import EPOLLONESHOT

from servers.base import READ, Peer, Settings, block_shutdown_signals
from servers.epoll_server import EpollServer

POOL_THREADS = 10


class EpollPoolServer(EpollServer):
    max_events = 10
    takes_workers = True

    def __init__(self, listener: socket.socket, settings: Settings) -> None:
        super().__init__(listener, settings)
        self.pool = ThreadPoolExecutor(max_workers=settings.workers or POOL_THREADS, initializer=block_shutdown_signals)

    def watch(self, peer: Peer) -> None:
        self.register(peer.fd, READ | EPOLLONESHOT)

    def on_ready(self, peer: Peer, events: int) -> None:
        self.pool.submit(super().on_ready, peer, events)

    def rearm(self, peer: Peer) -> None:
        self.modify(peer.fd, peer.interest() | EPOLLONESHOT)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        super().close()
