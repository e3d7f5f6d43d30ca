"""What every server model shares: listener, signals, connection state, write buffering, the loop, timeouts.

A model module holds one small class; the only thing it adds is how it
multiplexes connections (like the classes of CPython's Lib/selectors.py).

Timeouts, as nginx's client_header_timeout and keepalive_timeout: a client
must send a whole request (a new connection's first, or one it has begun)
within the header timeout, and a connection that makes no progress otherwise
(idle between requests, or not taking its answers) is closed after the idle
timeout. Event loops check every connection once a tick (Settings.tick_s),
comparing what it has done since the last check, so nothing is timed per
request and the timeouts are as coarse as a tick; blocking sockets leave the
timing to the kernel (SO_RCVTIMEO, SO_SNDTIMEO, whose count starts again when
the kernel takes part of a write). A timed-out connection is closed without
an answer, as nginx does.

Out of descriptors (or memory), accept() fails while the listener stays
ready: every model then stops accepting for a tick, as nginx does, rather than
retry at once and spin.
"""

from __future__ import annotations

import errno
import resource
import select
import signal
import socket
import struct
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from servers.http import BULK, BULK_CHUNK, FAILURES, HttpConnection, Response, error_response

RECV_SIZE = 64 * 1024
COALESCE_LIMIT = 16 * 1024  # smaller bodies are copied next to their head: one send, not two
DRAIN_LIMIT = 1024 * 1024
SHUTDOWN_SIGNALS = {signal.SIGTERM, signal.SIGINT}
HEADER_TIMEOUT_S = 60.0  # nginx's client_header_timeout
IDLE_TIMEOUT_S = 75.0  # nginx's keepalive_timeout
TICK_S = 1.0  # how often an event loop looks for connections past their timeout (unless a timeout is short)
# accept() errors that another accept() at once would repeat: stop accepting for a tick, as nginx does.
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

# poll and epoll use the same bits; the select model maps its sets onto them.
READ = select.POLLIN
WRITE = select.POLLOUT
READABLE = select.POLLIN | select.POLLERR | select.POLLHUP  # errors surface on the next recv


@dataclass(frozen=True, slots=True)
class Settings:
    host: str
    port: int
    backlog: int = 4096
    workers: int | None = None
    uvloop: bool = False
    header_timeout: float = HEADER_TIMEOUT_S
    idle_timeout: float = IDLE_TIMEOUT_S

    @property
    def tick_s(self) -> float:
        """How often an event loop checks its connections' timeouts: TICK_S, or twice per timeout if shorter."""
        return min(TICK_S, self.header_timeout / 2, self.idle_timeout / 2)


class UsageError(Exception):
    """A setting the chosen model cannot honour."""


class Unsupported(Exception):
    """This host or interpreter cannot run the model (kernel, sandbox, missing C extension): why."""


UNSUPPORTED_EXIT = 3  # the exit status that says so; bench records the kind's points as unsupported


class Shutdown(SystemExit):
    """Raised in the main thread by SIGTERM/SIGINT; unwinds whatever it interrupts, exit status 0."""


def install_shutdown_handlers(also: Callable[[], None] | None = None) -> None:
    """SIGTERM/SIGINT raise Shutdown in the main thread, after calling `also` (if given)."""

    def shut_down(signum: int, frame: object) -> None:
        for number in SHUTDOWN_SIGNALS:  # a repeated signal must not interrupt the cleanup
            signal.signal(number, signal.SIG_IGN)
        if also:
            also()
        raise Shutdown(0)

    for number in SHUTDOWN_SIGNALS:
        signal.signal(number, shut_down)


@contextmanager
def shutdown_signals_blocked() -> Iterator[None]:
    """SIGTERM/SIGINT blocked in this thread meanwhile: a thread started inside inherits the mask, so it has them
    blocked from its first instruction and the kernel hands them to the main thread, which owns shutdown.

    A thread that blocks them itself (an initializer, say) leaves a window in which the kernel may hand it the
    signal; the main thread, waiting in accept(), then never hears of it.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start_thread(target: Callable[..., object], *args: object) -> None:
    """Start a daemon thread that has SIGTERM/SIGINT blocked from its first instruction. RuntimeError: the thread
    could not start."""
    with shutdown_signals_blocked():
        threading.Thread(target=target, args=args, daemon=True).start()


def raise_open_file_limit() -> int:
    """Soft limit up to the hard one, so thousands of connections can be held; the soft limit in force after.

    The one helper for it: bench, its idle-connection holders and the servers all call this.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:  # an unlimited hard limit is above the kernel's nr_open
            warn_once("rlimit", f"open-file limit stays at {soft}: {error}")
    return soft


_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        print(f"servers: {message}", file=sys.stderr, flush=True)


def open_listener(settings: Settings, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket; the address family follows the numeric --host (IPv4 or IPv6)."""
    family, _, _, _, address = socket.getaddrinfo(
        settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
    )[0]
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(address)
        listener.listen(settings.backlog)
    except OSError:
        listener.close()
        raise
    return listener


class Outbox(deque):
    """Answers waiting to be written, in order: wire bytes, or an int for that many bytes of the shared BULK
    buffer, so bulk bodies stay slices of it. A deque, so `if outbox` costs no Python call on the hot path.
    """

    __slots__ = ("bytes_taken",)

    def __init__(self) -> None:
        super().__init__()
        self.bytes_taken = 0  # handed to the kernel (or a transport) so far: progress, for the timeouts

    def queue(self, responses: Iterable[Response]) -> None:
        for response in responses:
            self.append(response.head)
            if response.bulk > COALESCE_LIMIT:
                self.append(response.bulk)
            elif response.bulk:
                self.append(BULK[: response.bulk])

    def next_chunk(self) -> bytes | memoryview:
        """Take the next chunk to write: a slice of BULK, or every small piece queued before it, joined."""
        if isinstance(self[0], int):
            remaining = self.popleft()
            if remaining > BULK_CHUNK:
                self.appendleft(remaining - BULK_CHUNK)
            chunk = BULK[: min(remaining, BULK_CHUNK)]
        else:
            small = [self.popleft()]
            while self and not isinstance(self[0], int):
                small.append(self.popleft())
            chunk = small[0] if len(small) == 1 else b"".join(small)
        self.bytes_taken += len(chunk)
        return chunk

    def send(self, sock: socket.socket) -> bool:
        """Write until done or the socket would block (what a send leaves is put back first); True when all is
        written."""
        while self:
            chunk = self.next_chunk()
            try:
                sent = sock.send(chunk)
            except BlockingIOError:
                sent = 0
            if sent < len(chunk):
                self.appendleft(memoryview(chunk)[sent:])
                self.bytes_taken -= len(chunk) - sent
                if not sent:
                    return False
        return True


class Connection:
    """One client's HTTP state and pending output, and the progress it showed at the last timeout check."""

    def __init__(self) -> None:
        self.http = HttpConnection()
        self.outbox = Outbox()
        self._progress: tuple[int, int, bool] | None = None
        self._progress_at = 0.0

    def take(self, data: bytes) -> bytes | None:
        """Hand the bytes read to the HTTP core; the wire bytes to send at once when the fast path answered
        them whole with nothing queued before (and no bulk body), else None with every answer queued."""
        if self.outbox or (response := self.http.answer(data)) is None:
            self.outbox.queue(self.http.feed(data))
        elif response.bulk:
            self.outbox.queue((response,))
        else:
            return response.head
        return None

    def waiting_for_request(self) -> bool:
        """Whether the header timeout applies: a request (a new connection's first, or one begun) is awaited."""
        return not self.outbox and (self.http.requests == 0 or self.http.pending)

    def overdue(self, now: float, settings: Settings) -> bool:
        """Whether the connection has made no progress for its timeout, as seen by checks `now` and before.

        Progress is noticed by the check, not where it happens: the hot path reads no clock.
        """
        waiting = self.waiting_for_request()
        progress = (self.http.requests, self.outbox.bytes_taken, waiting)
        if progress != self._progress:
            self._progress, self._progress_at = progress, now
            return False
        return now - self._progress_at >= (settings.header_timeout if waiting else settings.idle_timeout)


class Peer(Connection):
    """One client connection: its socket, HTTP state and pending output. Blocking or non-blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.fd = sock.fileno()
        self.eof = False  # the client will send no more
        self.broken = False  # reset or failed: drop at once
        self.registered = READ  # the events an event loop watches for

    @property
    def finished(self) -> bool:
        return self.broken or (not self.outbox and (self.eof or self.http.closing))

    def interest(self) -> int:
        """Write while output is pending, else read: a client that does not read its answers is not read from."""
        return WRITE if self.outbox else READ

    def receive(self) -> int:
        """Read once and queue the answers; how many bytes came (0: would block, end of stream, error)."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return 0
        except OSError:
            self.broken = True
            return 0
        if not data:
            self.eof = True
            return 0
        self.respond(data)
        return len(data)

    def respond(self, data: bytes) -> None:
        """Hand the bytes read to the core and queue its answers, the fast path's sent at once if the socket
        takes them (one send, straight from the read; what it leaves is queued)."""
        if (wire := self.take(data)) is not None:
            try:
                sent = self.sock.send(wire)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.broken = True
                return
            if sent < len(wire):
                self.outbox.append(wire[sent:])

    def flush(self) -> bool:
        """Write until the socket would block, taking the core's next batch whenever one is written.

        True when nothing is left to write. A client that has gone makes a write fail, so at most one
        batch (one /sleep or /cpu request) is answered after it has left.
        """
        try:
            while self.outbox.send(self.sock):
                if not self.http.paused:
                    return True
                self.outbox.queue(self.http.feed(b""))
            return False
        except OSError:
            self.broken = True
            return True

    def answer_unavailable(self) -> None:
        """Answer 503 without waiting, before the connection is closed: the server cannot take it now."""
        try:
            self.sock.send(error_response(503).head, socket.MSG_DONTWAIT)
        except OSError:
            pass

    def expire(self) -> None:
        """End a connection past its timeout from any thread: the loop that owns it sees it hang up and drops it."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already reset, or already closed by its owner
            pass

    def close(self) -> None:
        if not (self.eof or self.broken):
            self._discard_unread_input()
        self.sock.close()

    def _discard_unread_input(self) -> None:
        # Unread input makes close() send a reset, which can destroy the answer
        # still in flight (an error response, say): read what is there first.
        drained = 0
        try:
            while drained < DRAIN_LIMIT and (data := self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)):
                drained += len(data)
        except OSError:
            pass


def timeval(seconds: float) -> bytes:
    seconds = max(seconds, 0.001)  # a zero timeval means no timeout at all
    return struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))


class KernelTimeouts:
    """A blocking socket's timeouts as SO_RCVTIMEO and SO_SNDTIMEO: a read or write waiting longer fails (EAGAIN).

    Between requests the read timeout is the idle timeout, set once; only while a request is awaited (the
    first, or one begun) is it set before each read, to what is left of the header timeout.
    """

    def __init__(self, peer: Peer, settings: Settings) -> None:
        self.peer = peer
        self.settings = settings
        self.deadline: float | None = None  # when the awaited request must be complete; None: none is awaited
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(settings.idle_timeout))

    def arm(self) -> bool:
        """Set the timeout of the next read; False when the awaited request is already out of time."""
        if self.peer.waiting_for_request():
            now = time.monotonic()
            if self.deadline is None:
                self.deadline = now + self.settings.header_timeout
            if now >= self.deadline:
                return False
            self._set_read_timeout(self.deadline - now)
        elif self.deadline is not None:
            self.deadline = None
            self._set_read_timeout(self.settings.idle_timeout)
        return True

    def _set_read_timeout(self, seconds: float) -> None:
        self.peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(seconds))


class Server(ABC):
    """A listener and its connections; a model subclass supplies `serve`."""

    blocking_sockets = False
    peer_class: type[Peer] = Peer  # what take() makes of an accepted connection
    takes_workers = False  # whether --workers means something to this model

    def __init__(self, listener: socket.socket, settings: Settings) -> None:
        self.listener = listener
        self.settings = settings
        self.peers: dict[int, Peer] = {}

    @classmethod
    def create(cls, settings: Settings) -> Server:
        return cls(open_listener(settings), settings)

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    @abstractmethod
    def serve(self) -> None:
        """Accept and serve connections until shut down."""

    def admit(self, sock: socket.socket) -> bool:
        """Whether this model can take a newly accepted connection (else it is answered 503)."""
        return True

    def accept(self) -> Peer | None:
        """The next connection accepted and taken (see take), or None when none is waiting."""
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, TimeoutError):
                return None
            except OSError as error:  # out of descriptors, or the client already gone
                warn_once(f"accept {error.errno}", f"accept failed: {error.strerror} (reported once)")
                if error.errno in OUT_OF_RESOURCES:
                    self.pause_accepting()
                return None
            if (peer := self.take(sock)) is not None:
                return peer

    def take(self, sock: socket.socket) -> Peer | None:
        """Set up a just-accepted connection and start watching it; None when it was turned away (503) or its set-up
        failed (setsockopt, the poller), which closes this connection only."""
        try:
            sock.setblocking(self.blocking_sockets)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = self.peer_class(sock)
            if not self.admit(sock):
                peer.answer_unavailable()
                peer.close()
                return None
            self.watch(peer)
        except Exception as error:
            FAILURES.report("setting up an accepted connection failed, so it was closed", error)
            sock.close()
            return None
        self.peers[peer.fd] = peer
        return peer

    def watch(self, peer: Peer) -> None:  # noqa: B027 (not abstract: blocking sockets need nothing here)
        """Start watching a connection just set up: an event loop registers it with its poller."""

    def pause_accepting(self) -> None:
        """Out of descriptors or memory: the listener stays ready, so retrying at once would spin."""
        time.sleep(self.settings.tick_s)

    def refuse(self, peer: Peer) -> None:
        """Answer 503 and close: the model cannot take this connection now."""
        peer.answer_unavailable()
        self.drop(peer)

    def converse(self, peer: Peer) -> None:
        """Serve one connection on a blocking socket until it ends or times out; a failure ends this connection only."""
        try:
            timeouts = KernelTimeouts(peer, self.settings)
            while not peer.finished and timeouts.arm():
                # On a blocking socket, "would block" means that the kernel timed the read or the write out.
                if not (peer.receive() or peer.eof or peer.broken) or not peer.flush():
                    break
        except Exception as error:
            FAILURES.report("serving a connection failed, so it was closed", error)
        finally:
            self.drop(peer)

    def drop(self, peer: Peer) -> None:
        self.peers.pop(peer.fd, None)
        peer.close()

    def close(self) -> None:
        # Shutdown may have interrupted any step of the bookkeeping: just close the sockets.
        for peer in list(self.peers.values()):
            peer.sock.close()
        self.listener.close()


class EventLoopServer(Server):
    """A level-triggered readiness loop; a subclass supplies the mechanism (register ... wait)."""

    accepting = True  # whether the listener is watched (not for the rest of a tick after accept() ran out)

    @abstractmethod
    def register(self, fd: int, events: int) -> None:
        """Start watching `fd` for `events` (READ/WRITE bits)."""

    @abstractmethod
    def modify(self, fd: int, events: int) -> None:
        """Change the events watched on `fd`."""

    @abstractmethod
    def unregister(self, fd: int) -> None:
        """Stop watching `fd`."""

    @abstractmethod
    def wait(self, timeout: float) -> Iterable[tuple[int, int]]:
        """Block until some descriptors are ready, at most `timeout` seconds; return (fd, events) pairs."""

    def serve(self) -> None:
        self.listener.setblocking(False)
        listener_fd = self.listener.fileno()
        self.register(listener_fd, READ)
        tick_s = self.settings.tick_s
        now = time.monotonic()
        next_tick = now + tick_s
        while True:
            for fd, events in self.wait(next_tick - now):
                if fd == listener_fd:
                    while self.accept():  # each taken and watched
                        pass
                elif peer := self.peers.get(fd):
                    self.on_ready(peer, events)
            now = time.monotonic()
            if now >= next_tick:
                self.tick(now)
                next_tick = now + tick_s

    def tick(self, now: float) -> None:
        if not self.accepting:
            self.register(self.listener.fileno(), READ)
            self.accepting = True
        for peer in list(self.peers.values()):  # a copy: epoll-pool's threads drop peers meanwhile
            if peer.overdue(now, self.settings):
                peer.expire()

    def pause_accepting(self) -> None:
        """Stop watching the listener until the next tick."""
        self.unregister(self.listener.fileno())
        self.accepting = False

    def watch(self, peer: Peer) -> None:
        self.register(peer.fd, READ)

    def on_ready(self, peer: Peer, events: int) -> None:
        """Serve a connection the kernel reported ready; a failure ends this connection only."""
        try:
            self.exchange(peer, events)
        except Exception as error:
            FAILURES.report("serving a connection failed, so it was closed", error)
            peer.broken = True
        if peer.broken or (not peer.outbox and (peer.eof or peer.http.closing)):  # peer.finished, inline
            self.drop(peer)
        else:
            self.rearm(peer)

    def exchange(self, peer: Peer, events: int) -> None:
        """Read once if readable, then write: level-triggered, so whatever is left is reported again."""
        if events & READABLE:
            peer.receive()
        if peer.outbox or peer.http.paused:  # the fast path usually wrote everything already
            peer.flush()

    def rearm(self, peer: Peer) -> None:
        if (interest := WRITE if peer.outbox else READ) != peer.registered:  # peer.interest(), inline
            self.modify(peer.fd, interest)
            peer.registered = interest

    def drop(self, peer: Peer) -> None:
        self.unregister(peer.fd)
        super().drop(peer)


class ServerModel(Protocol):
    """The shape of every model class, the one reuseport included."""

    takes_workers: bool
    port: int  # the bound port, which -p 0 leaves to the kernel

    @classmethod
    def create(cls, settings: Settings) -> ServerModel: ...

    def serve(self) -> None: ...

    def close(self) -> None: ...


def run_until_shutdown(server: ServerModel) -> None:
    install_shutdown_handlers()
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SHUTDOWN_SIGNALS)  # one that came during start-up: now
        server.serve()
    except Shutdown:
        pass
    finally:
        server.close()
