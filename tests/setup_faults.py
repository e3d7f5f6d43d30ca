"""Make a server's set-up of an accepted socket fail for real, one call at a time.

A seccomp filter installed in the server process (before it execs) hands each call that sets up an accepted
socket to this process: setsockopt(IPPROTO_TCP, TCP_NODELAY) and ioctl(FIONBIO), which is what
socket.setblocking() does. A thread here lets each call run, or fails the ones it was told to with EPERM, as
the kernel would (SECCOMP_RET_USER_NOTIF, Linux 5.5+; x86_64). The server sees a real failing system call.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import select
import socket
import struct
import threading

SYSCALL_NUMBERS = {"x86_64": {"ioctl": 16, "setsockopt": 54, "seccomp": 317}}
AUDIT_ARCH_X86_64 = 0xC000003E
FIONBIO = 0x5421
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
NOTIF_SIZE = 80  # struct seccomp_notif: id, pid, flags, struct seccomp_data
NOTIF_RECV = 0xC0000000 | NOTIF_SIZE << 16 | ord("!") << 8 | 0  # SECCOMP_IOCTL_NOTIF_RECV
NOTIF_SEND = 0xC0000000 | 24 << 16 | ord("!") << 8 | 1  # SECCOMP_IOCTL_NOTIF_SEND (struct seccomp_notif_resp)
LOAD, JUMP_IF_EQUAL, RETURN = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
NR, ARCH, ARG1, ARG2 = 0, 4, 24, 32  # offsets in struct seccomp_data (low words of the arguments)
LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child between fork and exec only calls into it


def supported() -> str | None:
    """Why this host cannot run these faults, or None."""
    machine = platform.machine()
    return None if machine in SYSCALL_NUMBERS else f"the seccomp filter is written for x86_64, not {machine}"


def instruction(code: int, k: int, jump_if_true: int = 0, jump_if_false: int = 0) -> bytes:
    return struct.pack("HBBI", code, jump_if_true, jump_if_false, k)


def filter_program() -> bytes:
    numbers = SYSCALL_NUMBERS[platform.machine()]
    return b"".join([
        instruction(LOAD, ARCH),  # 0
        instruction(JUMP_IF_EQUAL, AUDIT_ARCH_X86_64, 0, 10),  # 1: else allow
        instruction(LOAD, NR),  # 2
        instruction(JUMP_IF_EQUAL, numbers["ioctl"], 0, 2),  # 3: else 6
        instruction(LOAD, ARG1),  # 4: the request
        instruction(JUMP_IF_EQUAL, FIONBIO, 5, 6),  # 5: notify, else allow
        instruction(JUMP_IF_EQUAL, numbers["setsockopt"], 0, 5),  # 6: else allow
        instruction(LOAD, ARG1),  # 7: the level
        instruction(JUMP_IF_EQUAL, socket.IPPROTO_TCP, 0, 3),  # 8: else allow
        instruction(LOAD, ARG2),  # 9: the option
        instruction(JUMP_IF_EQUAL, socket.TCP_NODELAY, 0, 1),  # 10: notify, else allow
        instruction(RETURN, SECCOMP_RET_USER_NOTIF),  # 11
        instruction(RETURN, SECCOMP_RET_ALLOW),  # 12
    ])


def listening(pid: int, fd: int) -> bool:
    """Whether descriptor `fd` of process `pid` is a listening TCP socket (/proc/net/tcp*: state 0A)."""
    try:
        inode = os.readlink(f"/proc/{pid}/fd/{fd}").removeprefix("socket:[").removesuffix("]")
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            if any(fields[3] == "0A" and fields[9] == inode for fields in (line.split() for line in lines)):
                return True
    return False


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SetupFaults:
    """Start the server with preexec_fn=faults.install; `fail(n)` fails its next n set-up calls; `failed` counts."""

    def __init__(self) -> None:
        self._ours, self._theirs = socket.socketpair()
        program = filter_program()
        self._program = ctypes.create_string_buffer(program, len(program))
        self._fprog = SockFprog(len(program) // 8, ctypes.cast(self._program, ctypes.c_void_p))
        self._lock = threading.Lock()
        self._to_fail = 0
        self.failed = 0
        self.allowed = 0
        self.failures: list[tuple[int, int]] = []  # (process, descriptor) of each failed call
        self._thread = threading.Thread(target=self._answer, daemon=True)
        self._thread.start()  # before the server starts: its first set-up call waits for an answer

    def install(self) -> None:
        """In the server's process between fork and exec: the filter, its listener handed to us."""
        if LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        listener = LIBC.syscall(ctypes.c_long(SYSCALL_NUMBERS[platform.machine()]["seccomp"]),
                                ctypes.c_long(SECCOMP_SET_MODE_FILTER), ctypes.c_long(SECCOMP_FILTER_FLAG_NEW_LISTENER),
                                ctypes.byref(self._fprog))
        if listener < 0:
            raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER)")
        socket.send_fds(self._theirs, [b"listener"], [listener])

    def fail(self, calls: int = 1) -> None:
        with self._lock:
            self._to_fail += calls

    def _answer(self) -> None:
        _, (listener,), _, _ = socket.recv_fds(self._ours, 16, 1)
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        while True:
            for _, events in poller.poll():
                if not events & select.POLLIN:  # every process under the filter has ended
                    return
                notification = bytearray(NOTIF_SIZE)
                try:
                    fcntl.ioctl(listener, NOTIF_RECV, notification)
                except OSError:  # the caller was interrupted meanwhile
                    continue
                pid, = struct.unpack_from("I", notification, 8)
                fd, = struct.unpack_from("I", notification, 16 + 16)
                with self._lock:
                    fail = self._to_fail > 0 and not listening(pid, fd)  # a listener's set-up is not a connection's
                    if fail:
                        self.failures.append((pid, fd))
                    self._to_fail -= fail
                    self.failed += fail
                    self.allowed += not fail
                response = struct.pack("QqiI", struct.unpack_from("Q", notification)[0], 0,
                                       -errno.EPERM if fail else 0, 0 if fail else SECCOMP_USER_NOTIF_FLAG_CONTINUE)
                try:
                    fcntl.ioctl(listener, NOTIF_SEND, bytearray(response))
                except OSError:  # ENOENT: the caller is gone
                    pass
