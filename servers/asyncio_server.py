"""asyncio: one asyncio.Protocol per connection on asyncio's event loop, or uvloop's with --uvloop.

The loop is asyncio's own, so the shared parts come in through the HTTP core
and base.Connection; out of descriptors, asyncio itself stops accepting for a
second (and libuv, under uvloop, sheds the waiting connections). Setting up an
accepted socket is asyncio's too: when it fails, asyncio logs it through our
exception handler, which frees (closes) that socket at once.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import socket
import time
import traceback

from servers.base import Connection, Server, Settings, Shutdown, UsageError, install_shutdown_handlers
from servers.http import FAILURES


class HttpProtocol(Connection, asyncio.Protocol):
    def __init__(self, connections: set[HttpProtocol]) -> None:
        super().__init__()
        self.connections = connections
        self.can_write = True  # the transport's buffer is below its high-water mark
        self.eof = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        wire = self.take(data)
        if wire is not None and self.can_write and not self.http.closing:
            self.transport.write(wire)  # the fast path: nothing queued before it, and the transport wants it
            if self.can_write:
                return  # nothing left to write, pause or close
        elif wire is not None:
            self.outbox.append(wire)
        self._write()

    def eof_received(self) -> bool:
        self.eof = True
        self._write()
        return True  # keep the transport: _write closes it once the answers are out

    def pause_writing(self) -> None:
        self.can_write = False

    def resume_writing(self) -> None:
        self.can_write = True
        self._write()

    def _write(self) -> None:
        # Hand chunks over only while the transport wants them, so a large body
        # is never buffered whole, taking the core's next batch whenever one is
        # written; a write that fails closes the transport at once, so no batch
        # is started for a client that has gone. As in the other models, a
        # client that does not read its answers is not read from.
        while self.can_write and not self.transport.is_closing():
            if self.outbox:
                self.transport.write(self.outbox.next_chunk())
            elif self.http.paused:
                self.outbox.queue(self.http.feed(b""))
            else:
                break
        if self.outbox or self.http.paused:
            self.transport.pause_reading()
        elif self.eof or self.http.closing:
            self.transport.close()
        elif self.can_write:
            self.transport.resume_reading()
        else:  # the transport still holds answers the client has not read
            self.transport.pause_reading()


class AsyncioServer(Server):
    def __init__(self, listener: socket.socket, settings: Settings) -> None:
        super().__init__(listener, settings)
        self.loop = importlib.import_module("uvloop").new_event_loop() if settings.uvloop else asyncio.new_event_loop()
        self.connections: set[HttpProtocol] = set()
        self.server = self.loop.run_until_complete(
            # Serving starts in serve(): a request already waiting must not run its handler here, while
            # the shutdown signals are still blocked (servers/__main__.py).
            self.loop.create_server(lambda: HttpProtocol(self.connections), sock=listener, backlog=settings.backlog,
                                    start_serving=False)
        )

    @classmethod
    def create(cls, settings: Settings) -> Server:
        if settings.uvloop and importlib.util.find_spec("uvloop") is None:
            raise UsageError("--uvloop needs the uvloop package, which is not installed here")
        return super().create(settings)

    def serve(self) -> None:
        # uvloop swallows exceptions raised inside its callbacks, Shutdown too
        # (say, in a /sleep handler): stop the loop as well, and keep it quiet.
        install_shutdown_handlers(also=self.loop.stop)
        self.loop.set_exception_handler(self._report)
        self.loop.call_later(self.settings.tick_s, self._tick)
        self.loop.create_task(self.server.start_serving())
        self.loop.run_forever()

    def _tick(self) -> None:
        now = time.monotonic()
        for connection in list(self.connections):
            if connection.overdue(now, self.settings):
                connection.transport.abort()
        self.loop.call_later(self.settings.tick_s, self._tick)

    @staticmethod
    def _report(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        error = context.get("exception")
        if isinstance(error, Shutdown):
            return
        if error is None:
            loop.default_exception_handler(context)
        else:  # a callback failed (asyncio closes a protocol's transport): at a bounded rate
            FAILURES.report(context["message"], error)
            # Its traceback's frames keep their locals in a reference cycle: a socket accepted just before its set-up
            # failed (asyncio's own conn.setblocking) would stay open until the garbage collector runs. Freed now.
            traceback.clear_frames(error.__traceback__)

    def close(self) -> None:
        for connection in list(self.connections):
            connection.transport.abort()
        self.server.close()
        self.loop.run_until_complete(asyncio.sleep(0))  # runs the aborts' callbacks, which close the sockets
        self.loop.close()
        self.listener.close()
