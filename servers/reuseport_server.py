"""reuseport: N worker processes, each with its own SO_REUSEPORT listener and epoll loop.

The kernel spreads new connections over the listeners. The parent only
starts the workers, forwards SIGTERM/SIGINT to them, and starts a new worker
(with a new listener) in place of one that dies: at most RESTART_BURST in
RESTART_WINDOW_S, so a worker that dies at once is not forked in a loop.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import time
import traceback
from collections import deque

from servers.base import SHUTDOWN_SIGNALS, Settings, Shutdown, open_listener, run_until_shutdown
from servers.epoll_server import EpollServer

RESTART_BURST = 5
RESTART_WINDOW_S = 60.0


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
        restarts: deque[float] = deque(maxlen=RESTART_BURST)
        while True:
            pid, status = os.wait()
            self.workers.remove(pid)
            say(f"reuseport worker {pid} ended unexpectedly ({describe(status)})")
            if len(restarts) == RESTART_BURST and (wait := restarts[0] + RESTART_WINDOW_S - time.monotonic()) > 0:
                say(f"{RESTART_BURST} restarts within {RESTART_WINDOW_S:g} s: the next in {wait:.0f} s")
                time.sleep(wait)
            restarts.append(time.monotonic())
            self.listeners = [open_listener(self.settings, reuse_port=True)]
            self.workers.append(self._start_worker(self.listeners[0]))
            self.listeners[0].close()
            say(f"reuseport worker {self.workers[-1]} started in place of {pid}")

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


def say(message: str) -> None:
    print(f"servers: {message}", file=sys.stderr, flush=True)


def describe(wait_status: int) -> str:
    code = os.waitstatus_to_exitcode(wait_status)
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
