"""reuseport: N worker processes, each with its own SO_REUSEPORT listener and epoll loop.

The kernel spreads new connections over the listeners. The parent only
starts the workers, forwards SIGTERM/SIGINT to them and waits for them.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import traceback

from servers.base import SHUTDOWN_SIGNALS, Settings, Shutdown, open_listener, run_until_shutdown
from servers.epoll_server import EpollServer


class ReuseportServer:
    takes_workers = True

    def __init__(self, listeners: list[socket.socket], settings: Settings) -> None:
        self.listeners = listeners
        self.settings = settings
        self.workers: list[int] = []

    @property
    def port(self) -> int:
        return self.settings.port

    @classmethod
    def create(cls, settings: Settings) -> ReuseportServer:
        # Bound here, in the parent, so a bad address fails once and clearly.
        first = open_listener(settings, reuse_port=True)
        settings = dataclasses.replace(settings, port=first.getsockname()[1])  # -p 0: one port for all
        listeners = [first]
        try:
            for _ in range(1, settings.workers or os.cpu_count() or 1):
                listeners.append(open_listener(settings, reuse_port=True))
        except OSError:
            for listener in listeners:
                listener.close()
            raise
        return cls(listeners, settings)

    def serve(self) -> None:
        for listener in self.listeners:
            self.workers.append(self._start_worker(listener))
        for listener in self.listeners:
            listener.close()
        while self.workers:
            pid, status = os.wait()
            self.workers.remove(pid)
            print(f"servers: reuseport worker {pid} ended unexpectedly (wait status {status})", file=sys.stderr)
        raise SystemExit(1)

    def _start_worker(self, listener: socket.socket) -> int:
        # Signals stay blocked across fork: the child must never unwind into the parent's code.
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                for other in self.listeners:
                    if other is not listener:
                        other.close()
                server = EpollServer(listener, self.settings)
                signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
                run_until_shutdown(server)
                status = 0
            except Shutdown:
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        return pid

    def close(self) -> None:
        for pid in self.workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in self.workers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:  # reaped just before the signal came
                pass
        for listener in self.listeners:
            listener.close()
