"""threaded: one thread per connection, each on a blocking socket; beyond --workers threads, 503."""

import socket
import threading

from servers.base import Peer, Server, Settings, start_thread, warn_once

MAX_THREADS = 16_384  # the default cap: above the benchmark's 10,000 idle connections and its active ones


class ThreadedServer(Server):
    blocking_sockets = True
    takes_workers = True

    def __init__(self, listener: socket.socket, settings: Settings) -> None:
        super().__init__(listener, settings)
        self.threads = threading.BoundedSemaphore(settings.workers or MAX_THREADS)

    def serve(self) -> None:
        # accept() returns at least once a tick: under load, a SIGTERM that came while threads were running
        # could leave the main thread waiting in accept() with its handler not yet run (until a client came).
        self.listener.settimeout(self.settings.tick_s)
        while True:
            if peer := self.accept():
                self.start(peer)

    def start(self, peer: Peer) -> None:
        if self.threads.acquire(blocking=False):
            try:
                start_thread(self._converse_in_thread, peer)
                return
            except RuntimeError as error:  # out of memory, or of the tasks the system allows
                self.threads.release()
                warn_once("thread", f"threaded: cannot start a thread ({error}): answering 503 (reported once)")
        self.refuse(peer)

    def _converse_in_thread(self, peer: Peer) -> None:
        try:
            self.converse(peer)
        finally:
            self.threads.release()
