"""Run code and processes inside a named network namespace.

The rest of the project uses these instead of building `ip netns exec` command
strings: `popen("sk-client", ["wrk", ...])` or `with inside("sk-server"): ...`.
Only the standard library is used here, so servers and containers can import it
without pyroute2.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1  # prctl(2)

_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(RuntimeError):
    """A namespace is missing or cannot be entered."""


def ns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(ns_path(name))


def _setns(fd: int) -> None:
    # os.setns only exists from Python 3.12; libc's setns is the same call.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _open_ns(name: str) -> int:
    try:
        return os.open(ns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NamespaceError(
            f"network namespace {name!r} does not exist; "
            "create the topology with: sudo python3 netns/setup.py up"
        ) from None


@contextmanager
def inside(name: str) -> Iterator[None]:
    """Move the calling thread into namespace `name` for the block.

    Sockets created inside the block stay in that namespace after it ends.
    """
    target = _open_ns(name)
    # thread-self: setns moves only the calling thread, so remember that thread's namespace.
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def popen(name: str, args: Sequence[str], parent_death_signal: int = 0, **kwargs) -> subprocess.Popen:
    """Start `args` as a process inside namespace `name` (no shell involved).

    `parent_death_signal`: the signal the process gets when the thread that started it dies (the
    caller killed, even with SIGKILL); kept across exec, so the command itself receives it.
    """
    fd = _open_ns(name)
    parent = os.getpid()

    def in_child() -> None:  # runs in the child before exec and before close_fds closes `fd`
        if parent_death_signal:
            _libc.prctl(PR_SET_PDEATHSIG, parent_death_signal)
            if os.getppid() != parent:  # the parent died before prctl: the signal would never come
                os._exit(1)
        _setns(fd)

    try:
        return subprocess.Popen(list(args), preexec_fn=in_child, **kwargs)
    finally:
        os.close(fd)


def run(name: str, args: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    """Like subprocess.run, inside namespace `name`."""
    timeout = kwargs.pop("timeout", None)
    check = kwargs.pop("check", False)
    if kwargs.pop("capture_output", False):
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with popen(name, args, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
    completed = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check:
        completed.check_returncode()
    return completed
