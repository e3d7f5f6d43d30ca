"""io-uring: one thread, a completion loop over an io_uring (PyPI liburing): multishot accept, multishot recv
into a ring of provided buffers, and the readiness loops' direct send.

Each connection has one multishot recv armed for as long as it is read from: the kernel picks a buffer from
one ring shared by every connection (BUFFERS of BUFFER_SIZE, registered once), so an idle connection holds
no buffer and a request costs no submission. The answers are written as the readiness loops write them,
with send(2) straight from the completion (the fast path: the whole response at once); a send the socket
cannot take waits for POLLOUT on the ring, and while it waits the connection's recv is cancelled: a client
that does not read its answers is not read from. The submissions of a pass over the completions, and the
buffers it gave back, go to the kernel in the one io_uring_enter that waits for the next ones. The ring is
single-issuer with deferred task work: the kernel runs the completions' work in that io_uring_enter too,
not by interrupting the loop.

The binding lacks two calls here: io_uring_setup_buf_ring cannot be called (its `err` out-parameter takes
no Python object) and BufReg has no fields, so the buffer ring is registered with io_uring_register(2)
through ctypes and filled with plain stores (BufferRing). Zero-copy send is not used: the answers are small,
and on veth the kernel copies a zero-copy send anyway (its notification says IORING_NOTIF_USAGE_ZC_COPIED).

Where io_uring cannot run (no liburing for this interpreter, an old kernel, kernel.io_uring_disabled, a
seccomp filter) `create` raises Unsupported, why.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import select
import socket
import struct
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from servers.base import Peer, Server, Settings, Unsupported, open_listener, warn_once
from servers.http import FAILURES

ENTRIES = 4096  # submission queue slots; the kernel keeps any number of requests in flight
BUFFERS = 256  # provided receive buffers, shared by all connections (a power of two): at most 1 MiB read per pass
BUFFER_SIZE = 4096  # a request larger than this arrives in several completions
BUFFER_GROUP = 0
ACCEPT_BACKOFF_S = 0.01  # after a failed accept (out of descriptors): pause instead of spinning
KERNEL = (6, 1)  # multishot recv (6.0), IORING_SETUP_DEFER_TASKRUN (6.1)
ACCEPT, RECV, WRITABLE, RETRY_ACCEPT, TICK, CANCEL = range(6)  # low three bits of user_data; the rest: the fd
OP_BITS = 3
BUFFER_SHIFT = 16  # IORING_CQE_BUFFER_SHIFT: a completion's flags carry its buffer's id above this bit
IO_URING_DISABLED = Path("/proc/sys/kernel/io_uring_disabled")
NR_IO_URING_REGISTER = 427  # the same on every architecture but alpha and mips
IORING_REGISTER_PBUF_RING = 22
BUF_ENTRY = struct.Struct("<QIH")  # struct io_uring_buf without resv: addr, len, bid (16 bytes apart)
BUF_TAIL = struct.Struct("<H")  # the ring's tail: entry 0's resv, at byte 14
BUF_REG = struct.Struct("<QIHH3Q")  # struct io_uring_buf_reg: ring_addr, ring_entries, bgid, flags, resv


def load_liburing() -> ModuleType:
    """The binding, imported only when this kind runs: loading a C extension can switch a free-threaded
    interpreter's GIL back on, which must not happen to the other kinds."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):  # seen: "init function of liburing returned uninitialized object"
        raise Unsupported("liburing's wheels are abi3 (the limited C API), which free-threaded CPython "
                          f"{platform.python_version()} cannot load")
    release = tuple(int(part) for part in platform.release().split(".")[:2])
    if release < KERNEL:
        raise Unsupported(f"multishot recv and deferred task work need Linux {'.'.join(map(str, KERNEL))}+, "
                          f"this kernel is {platform.release()}")
    if platform.machine() != "x86_64":
        raise Unsupported(f"the buffer ring's plain stores are ordered only on x86-64, not {platform.machine()}")
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


def address(memory: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(memory))


class BufferRing:
    """A provided-buffer ring: the kernel takes a buffer from its head for each receive, the loop gives the
    buffer back at its tail once the bytes are taken out. Its entries and the buffers are our own memory.

    The kernel reads an entry after the tail that covers it; x86-64 keeps stores in order, so plain stores
    publish them (load_liburing refuses other machines).
    """

    def __init__(self, ring_fd: int, count: int = BUFFERS, size: int = BUFFER_SIZE) -> None:
        self.entries = mmap.mmap(-1, count * 16)  # page-aligned, as the kernel wants it
        self.memory = mmap.mmap(-1, count * size)  # untouched pages cost nothing: idle connections use none
        base = address(self.memory)
        self.packed = [BUF_ENTRY.pack(base + bid * size, size, bid) for bid in range(count)]
        self.size, self.mask, self.tail = size, count - 1, 0
        registration = ctypes.create_string_buffer(BUF_REG.pack(address(self.entries), count, BUFFER_GROUP, 0,
                                                                0, 0, 0))
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(NR_IO_URING_REGISTER, ring_fd, IORING_REGISTER_PBUF_RING, registration, 1) < 0:
            raise Unsupported(f"io_uring_register(IORING_REGISTER_PBUF_RING): {os.strerror(ctypes.get_errno())}")
        for bid in range(count):
            self.take(bid, 0)
        self.publish()

    def take(self, bid: int, length: int) -> bytes:
        """The bytes a receive put into buffer `bid`, copied out, and the buffer given back."""
        start = bid * self.size
        at = (self.tail & self.mask) * 16
        self.entries[at:at + BUF_ENTRY.size] = self.packed[bid]
        self.tail += 1
        return self.memory[start:start + length]

    def publish(self) -> None:
        """Let the kernel see the buffers given back since the last call: one store of the tail."""
        BUF_TAIL.pack_into(self.entries, 14, self.tail & 0xFFFF)


class RingPeer(Peer):
    """A connection and the requests it has on the ring, so that it is closed only when none is left: its
    descriptor then cannot be reused while a completion for it is still to come. The flags are class
    defaults, set on a connection only when they change: an idle one carries no more than epoll's."""

    reading = False  # a multishot recv is armed
    unread = False  # ... and cancelled: output is pending
    polling = False  # waiting for POLLOUT
    dropping = False  # its requests cancelled: closed when the last one ends
    held = b""  # what the recv took while output was pending, to be answered after it


class IoUringServer(Server):
    blocking_sockets = False  # the ring polls them itself; the direct send must not block the loop
    peer_class = RingPeer

    def __init__(self, listener: socket.socket, settings: Settings, liburing: ModuleType) -> None:
        super().__init__(listener, settings)
        self.uring = liburing
        self.ring = liburing.Ring()
        try:
            liburing.io_uring_queue_init(ENTRIES, self.ring, liburing.IORING_SETUP_SINGLE_ISSUER
                                         | liburing.IORING_SETUP_DEFER_TASKRUN)
        except OSError as error:
            listener.close()
            raise Unsupported(setup_failure(error)) from None
        self.buffers = BufferRing(self.ring.ring_fd)
        self.cqe = liburing.Cqe()
        self.backoff = liburing.timespec(ACCEPT_BACKOFF_S)
        self.tick_ts = liburing.timespec(settings.tick_s)  # the timeouts are checked once a tick, as in every loop
        self.more, self.has_buffer = liburing.IORING_CQE_F_MORE, liburing.IORING_CQE_F_BUFFER

    @classmethod
    def create(cls, settings: Settings) -> Server:
        liburing = load_liburing()
        return cls(open_listener(settings), settings, liburing)

    def serve(self) -> None:
        uring, ring, cqe = self.uring, self.ring, self.cqe
        self.arm_accept()
        self.submit(uring.io_uring_prep_timeout, 0, TICK, self.tick_ts, 0, 0)
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
            self.buffers.publish()

    def submit(self, prep: Callable[..., None], fd: int, op: int, *args: object) -> Any:
        """Queue one request (its submission queue entry returned); it reaches the kernel with the next
        io_uring_enter."""
        sqe = self.uring.io_uring_get_sqe(self.ring)
        if sqe is None:  # the submission queue is full: hand it to the kernel now
            self.uring.io_uring_submit(self.ring)
            sqe = self.uring.io_uring_get_sqe(self.ring)
        prep(sqe, *args)
        sqe.user_data = fd << OP_BITS | op
        return sqe

    def arm_accept(self) -> None:
        fd = self.listener.fileno()
        self.submit(self.uring.io_uring_prep_multishot_accept, fd, ACCEPT, fd, None, socket.SOCK_NONBLOCK)

    def watch(self, peer: Peer) -> None:
        self.read(peer)

    def read(self, peer: RingPeer) -> None:
        sqe = self.submit(self.uring.io_uring_prep_recv_multishot, peer.fd, RECV, peer.fd, None, 0)
        sqe.flags |= self.uring.IOSQE_BUFFER_SELECT
        self.uring.io_uring_sqe_set_buf_group(sqe, BUFFER_GROUP)
        peer.reading = True

    def complete(self, user_data: int, result: int, flags: int) -> None:
        fd, op = user_data >> OP_BITS, user_data & ((1 << OP_BITS) - 1)
        if op == RECV:
            peer = self.peers[fd]
            data = self.buffers.take(flags >> BUFFER_SHIFT, result) if flags & self.has_buffer else b""
            if flags & self.more and result > 0 and not (peer.outbox or peer.http.paused or peer.dropping):
                try:  # the usual completion, inline (serve_peer's steps): bytes read, and the recv still armed
                    peer.respond(data)
                    if peer.outbox or peer.http.paused:
                        peer.flush()
                except Exception as error:
                    FAILURES.report("serving a connection failed, so it was closed", error)
                    peer.broken = True
                if peer.outbox or peer.broken or peer.http.closing:
                    self.next_step(peer)
                return
            if not flags & self.more:
                peer.reading = peer.unread = False
            self.serve_peer(peer, self.received, result, data)
        elif op == WRITABLE:
            peer = self.peers[fd]
            peer.polling = False
            self.serve_peer(peer, self.writable, result)
        elif op == ACCEPT:
            self.accepted(result, flags)
        elif op == RETRY_ACCEPT:
            self.arm_accept()
        elif op == TICK:
            self.tick()

    def serve_peer(self, peer: RingPeer, step: Callable[..., None], *args: object) -> None:
        """Take one completion of a connection, then its next step; a failure ends this connection only."""
        if not peer.dropping:
            try:
                step(peer, *args)
            except Exception as error:
                FAILURES.report("serving a connection failed, so it was closed", error)
                peer.broken = True
        self.next_step(peer)

    def received(self, peer: RingPeer, result: int, data: bytes) -> None:
        if result > 0:
            if peer.outbox or peer.http.paused:  # came before the cancel: answered once the answers are written
                peer.held += data
                return
            peer.respond(data)
            if peer.outbox or peer.http.paused:  # the direct send usually wrote everything already
                peer.flush()
        elif result == 0:
            peer.eof = True
        elif result not in (-errno.ENOBUFS, -errno.ECANCELED):  # no buffer left: armed again after this pass
            peer.broken = True

    def writable(self, peer: RingPeer, result: int) -> None:
        if result < 0:
            peer.broken = True
        elif peer.flush() and not peer.broken and peer.held:
            data, peer.held = peer.held, b""
            self.received(peer, len(data), data)

    def next_step(self, peer: RingPeer) -> None:
        """Close a finished connection, else wait for room for pending output, reading no more, else read on."""
        if peer.dropping or peer.finished:
            self.drop(peer)
        elif peer.outbox:
            if not peer.polling:
                self.submit(self.uring.io_uring_prep_poll_add, peer.fd, WRITABLE, peer.fd, select.POLLOUT)
                peer.polling = True
            if peer.reading and not peer.unread:
                self.submit(self.uring.io_uring_prep_cancel64, 0, CANCEL, peer.fd << OP_BITS | RECV, 0)
                peer.unread = True
        elif not peer.reading:
            self.read(peer)

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
        if not flags & self.more:  # the multishot accept ended: arm it again
            if result >= 0:
                self.arm_accept()
            else:
                self.submit(self.uring.io_uring_prep_timeout, self.listener.fileno(), RETRY_ACCEPT,
                            self.backoff, 0, 0)

    def drop(self, peer: RingPeer) -> None:
        """Close the connection once no request of it is left on the ring; cancel those that are."""
        if not (peer.reading or peer.polling):
            super().drop(peer)
        elif not peer.dropping:
            peer.dropping = True
            self.submit(self.uring.io_uring_prep_cancel_fd, 0, CANCEL, peer.fd, self.uring.IORING_ASYNC_CANCEL_ALL)

    def close(self) -> None:
        super().close()
        self.uring.io_uring_queue_exit(self.ring)
