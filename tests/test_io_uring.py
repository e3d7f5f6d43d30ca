"""io_uring made unavailable by a seccomp filter: the io-uring server says why and exits 3, and a sweep records
its points as unsupported with that reason, never as failures (as root: namespaces, a real seccomp filter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from servers.base import UNSUPPORTED_EXIT  # noqa: E402

# Runs the interpreter given after it with io_uring_setup(2) failing EPERM: a one-rule seccomp filter
# (classic BPF: load the syscall number, EPERM for 425 on x86-64, allow everything else).
NO_IO_URING = r'''#!{python}
import ctypes, os, struct, sys
NR_IO_URING_SETUP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 425, 38, 22, 2
ALLOW, ERRNO_EPERM = 0x7FFF0000, 0x00050000 | 1
program = [(0x20, 0, 0, 0), (0x15, 0, 1, NR_IO_URING_SETUP), (0x06, 0, 0, ERRNO_EPERM), (0x06, 0, 0, ALLOW)]
code = b"".join(struct.pack("HBBI", *op) for op in program)
buffer = ctypes.create_string_buffer(code)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog)):
    sys.exit("seccomp: " + os.strerror(ctypes.get_errno()))
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
'''

pytestmark = [pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter names x86-64's syscall number")]


@pytest.fixture
def no_io_uring(tmp_path: Path) -> Path:
    wrapper = tmp_path / "python-without-io-uring"
    wrapper.write_text(NO_IO_URING.format(python=sys.executable))
    wrapper.chmod(0o755)
    return wrapper


def test_the_server_exits_3_naming_the_seccomp_filter(no_io_uring: Path):
    done = subprocess.run([str(no_io_uring), "-m", "servers", "io-uring", "-p", "0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == UNSUPPORTED_EXIT, done.stderr
    assert done.stderr.strip() == ("servers: io-uring cannot run here: io_uring_setup: Operation not permitted: "
                                   "a seccomp filter blocks io_uring (Docker Engine 25+'s default profile does)")
    # The same filter leaves the other kinds alone.
    listing = subprocess.run([str(no_io_uring), "-m", "servers", "--list"], cwd=ROOT, capture_output=True,
                             text=True, timeout=30)
    assert "io-uring" in listing.stdout.split()


@pytest.mark.skipif(os.geteuid() != 0, reason="the sweep needs root (namespaces, pinning)")
def test_a_sweep_records_io_uring_as_unsupported_with_the_reason(no_io_uring: Path, tmp_path: Path):
    subprocess.run([sys.executable, str(ROOT / "netns" / "setup.py"), "up"], check=True, timeout=60,
                   capture_output=True)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "bench", "--server-python", str(no_io_uring), "--servers",
                           "io-uring", "epoll", "--preset", "smoke", "--connections", "4", "--repeat", "2",
                           "--duration", "1", "--flamegraphs", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # unsupported is not failed
    records = json.loads((out / "results.json").read_text())["records"]
    uring = [r for r in records if r["server"] == "io-uring"]
    assert [r["status"] for r in uring] == ["unsupported", "unsupported"]
    assert all("a seccomp filter blocks io_uring" in r["failure"] for r in uring), uring
    assert {r["status"] for r in records if r["server"] == "epoll"} == {"ok"}
    profiled = {p["server"] for p in json.loads((out / "results.json").read_text())["profiling"]["profiles"]}
    assert "io-uring" not in profiled and "epoll" in profiled
    assert "io-uring @ 4: 2 unsupported — io-uring cannot run here" in (out / "report.md").read_text()
