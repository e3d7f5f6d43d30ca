"""epoll-pool: the original report's improved server, epoll plus a pool of 10 handler threads.

The main thread waits (at most 10 events a call) and hands each ready
connection to ThreadPoolExecutor(max_workers=10). EPOLLONESHOT disarms a
connection when it is reported, so no two workers ever handle one socket;
the worker re-arms it when done, with EPOLLOUT only while a response is pending.
"""

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from select import EPOLLONESHOT

from servers.base import READ, Peer, Settings, shutdown_signals_blocked
from servers.epoll_server import EpollServer

POOL_THREADS = 10


def started_pool(threads: int) -> ThreadPoolExecutor:
    """A ThreadPoolExecutor with all its threads started now, here, with SIGTERM/SIGINT blocked: they inherit the
    mask, so no signal can reach one of them before it is blocked there.

    Each start-up task waits for all the others, so no thread is idle when the next task is submitted, and the
    executor starts a new thread for each (it reuses idle threads only).
    """
    pool = ThreadPoolExecutor(max_workers=threads)
    all_running = threading.Barrier(threads)
    with shutdown_signals_blocked():
        for _ in range(threads):
            pool.submit(all_running.wait)
    return pool


class EpollPoolServer(EpollServer):
    max_events = 10
    takes_workers = True

    def __init__(self, listener: socket.socket, settings: Settings) -> None:
        super().__init__(listener, settings)
        self.pool = started_pool(settings.workers or POOL_THREADS)

    def watch(self, peer: Peer) -> None:
        self.register(peer.fd, READ | EPOLLONESHOT)

    def on_ready(self, peer: Peer, events: int) -> None:
        self.pool.submit(super().on_ready, peer, events)

    def rearm(self, peer: Peer) -> None:
        self.modify(peer.fd, peer.interest() | EPOLLONESHOT)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        super().close()
