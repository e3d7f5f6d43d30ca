"""io-uring: one thread, a completion loop over an io_uring (PyPI liburing): multishot accept, recv, send.

Each connection has one request in flight, a recv or a send: as in the
readiness models, a client that does not read its answers is not read from. A
send the kernel took only part of is submitted again with the rest. The
submissions of a pass over the completions go to the kernel in the one
io_uring_enter that waits for the next ones. The binding takes bytes to send,
not a memoryview, so a /bytes/N chunk and the rest of a partial send are copies;
a pending recv needs its buffer, RECV_SIZE per connection.

Where io_uring cannot run (no liburing for this interpreter, an old kernel,
kernel.io_uring_disabled, a seccomp filter) `create` raises Unsupported, why.
"""

from __future__ import annotations

import errno
import os
import platform
import socket
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from servers.base import Peer, Server, Settings, Unsupported, open_listener, warn_once
from servers.http import FAILURES

ENTRIES = 4096  # submission queue slots; the kernel keeps any number of requests in flight
RECV_SIZE = 4096  # per connection: 40 MB for 10,000 idle ones
ACCEPT_BACKOFF_S = 0.01  # after a failed accept (out of descriptors): pause instead of spinning
MULTISHOT_ACCEPT_KERNEL = (5, 19)
ACCEPT, RECV, SEND, RETRY_ACCEPT, TICK = range(5)  # low three bits of user_data; the rest is the descriptor
OP_BITS = 3
IO_URING_DISABLED = Path("/proc/sys/kernel/io_uring_disabled")


def load_liburing() -> ModuleType:
    """The binding, imported only when this kind runs: loading a C extension can switch a free-threaded
    interpreter's GIL back on, which must not happen to the other kinds."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):  # seen: "init function of liburing returned uninitialized object"
        raise Unsupported("liburing's wheels are abi3 (the limited C API), which free-threaded CPython "
                          f"{platform.python_version()} cannot load")
    release = tuple(int(part) for part in platform.release().split(".")[:2])
    if release < MULTISHOT_ACCEPT_KERNEL:
        raise Unsupported(f"multishot accept needs Linux {'.'.join(map(str, MULTISHOT_ACCEPT_KERNEL))}+, "
                          f"this kernel is {platform.release()}")
    try:
        import liburing
    except ImportError as error:
        raise Unsupported(f"the liburing package is missing ({error}): pip install -r requirements.txt") from None
    return liburing


def setup_failure(error: OSError) -> str:
    """Why io_uring_setup failed, as far as this process can tell."""
    if error.errno == errno.ENOSYS:
        return "this kernel has no io_uring (io_uring_setup: ENOSYS)"
    if IO_URING_DISABLED.exists() and (disabled := IO_URING_DISABLED.read_text().strip()) != "0":
        return f"kernel.io_uring_disabled is {disabled} (io_uring_setup: {error.strerror})"
    return (f"io_uring_setup: {error.strerror}: a seccomp filter blocks io_uring (Docker Engine 25+'s "
            "default profile does)")


class IoUringServer(Server):
    blocking_sockets = True  # the ring waits on them: a submitted recv completes once there are bytes

    def __init__(self, listener: socket.socket, settings: Settings, liburing: ModuleType) -> None:
        super().__init__(listener, settings)
        self.uring = liburing
        self.ring = liburing.Ring()
        try:
            liburing.io_uring_queue_init(ENTRIES, self.ring)
        except OSError as error:
            listener.close()
            raise Unsupported(setup_failure(error)) from None
        self.cqe = liburing.Cqe()
        self.backoff = liburing.timespec(ACCEPT_BACKOFF_S)
        self.tick_ts = liburing.timespec(settings.tick_s)  # the timeouts are checked once a tick, as in every loop
        self.inbox: dict[int, bytearray] = {}  # fd -> the buffer its recv fills
        self.unsent: dict[int, bytes] = {}  # fd -> what its send writes (kept alive until it completes)

    @classmethod
    def create(cls, settings: Settings) -> Server:
        liburing = load_liburing()
        return cls(open_listener(settings), settings, liburing)

    def serve(self) -> None:
        uring, ring, cqe = self.uring, self.ring, self.cqe
        self.arm_accept()
        self.submit(self.uring.io_uring_prep_timeout, 0, TICK, self.tick_ts, 0, 0)
        while True:
            uring.io_uring_submit_and_wait(ring, 1)  # SIGTERM: EINTR, and the handler raises Shutdown
            seen = 0
            for _ in uring.CqeIter(ring, cqe):
                entry = cqe[0]
                seen += 1
                try:
                    result = entry.res
                except OSError as error:  # the binding raises a negative result
                    result = -error.errno
                self.complete(entry.user_data, result, entry.flags)
            uring.io_uring_cq_advance(ring, seen)

    def submit(self, prep: Callable[..., None], fd: int, op: int, *args: object) -> None:
        """Queue one request; it reaches the kernel with the next io_uring_enter."""
        sqe = self.uring.io_uring_get_sqe(self.ring)
        if sqe is None:  # the submission queue is full: hand it to the kernel now
            self.uring.io_uring_submit(self.ring)
            sqe = self.uring.io_uring_get_sqe(self.ring)
        prep(sqe, *args)
        sqe.user_data = fd << OP_BITS | op

    def arm_accept(self) -> None:
        fd = self.listener.fileno()
        self.submit(self.uring.io_uring_prep_multishot_accept, fd, ACCEPT, fd)

    def watch(self, peer: Peer) -> None:
        self.recv(peer)

    def recv(self, peer: Peer) -> None:
        buffer = self.inbox.setdefault(peer.fd, bytearray(RECV_SIZE))
        self.submit(self.uring.io_uring_prep_recv, peer.fd, RECV, peer.fd, buffer, 0)

    def send(self, peer: Peer, data: bytes) -> None:
        self.unsent[peer.fd] = data
        self.submit(self.uring.io_uring_prep_send, peer.fd, SEND, peer.fd, data, 0)

    def complete(self, user_data: int, result: int, flags: int) -> None:
        fd, op = user_data >> OP_BITS, user_data & ((1 << OP_BITS) - 1)
        if op == ACCEPT:
            self.accepted(result, flags)
        elif op == RETRY_ACCEPT:
            self.arm_accept()
        elif op == TICK:
            self.tick()
        else:
            peer = self.peers[fd]
            try:
                self.exchange(peer, op, result)
            except Exception as error:
                FAILURES.report("serving a connection failed, so it was closed", error)
                self.drop(peer)

    def exchange(self, peer: Peer, op: int, result: int) -> None:
        """A connection's recv or send completed with `result`: take its bytes, then its next step."""
        if op == RECV:
            if result > 0:
                peer.outbox.queue(peer.http.feed(memoryview(self.inbox[peer.fd])[:result]))
            elif result == 0:
                peer.eof = True
            else:
                peer.broken = True
        elif result < 0:
            peer.broken = True
        elif result < len(self.unsent[peer.fd]):
            self.send(peer, self.unsent[peer.fd][result:])  # partial: the rest again
            return
        elif not peer.outbox and peer.http.paused:  # a batch written: the core's next one
            peer.outbox.queue(peer.http.feed(b""))
        self.next_step(peer)

    def tick(self) -> None:
        """Expire connections past their timeout (their pending recv then ends), and set the next tick."""
        now = time.monotonic()
        for peer in list(self.peers.values()):
            if peer.overdue(now, self.settings):
                peer.expire()
        self.submit(self.uring.io_uring_prep_timeout, 0, TICK, self.tick_ts, 0, 0)

    def accepted(self, result: int, flags: int) -> None:
        if result >= 0:
            self.take(socket.socket(fileno=result))
        else:
            warn_once(f"accept {-result}", f"accept failed: {os.strerror(-result)} (reported once)")
        if not flags & self.uring.IORING_CQE_F_MORE:  # the multishot accept ended: arm it again
            if result >= 0:
                self.arm_accept()
            else:
                self.submit(self.uring.io_uring_prep_timeout, self.listener.fileno(), RETRY_ACCEPT,
                            self.backoff, 0, 0)

    def next_step(self, peer: Peer) -> None:
        """After a completion: send what is pending, else close a finished connection, else read on."""
        if peer.outbox and not peer.broken:
            self.send(peer, bytes(peer.outbox.next_chunk()))
        elif peer.finished:
            self.drop(peer)
        else:
            self.recv(peer)

    def drop(self, peer: Peer) -> None:
        self.inbox.pop(peer.fd, None)
        self.unsent.pop(peer.fd, None)
        super().drop(peer)

    def close(self) -> None:
        super().close()
        self.uring.io_uring_queue_exit(self.ring)
