"""Runners start the servers and wrk: the one thing that differs between host and containers.

Everything else in bench (verification, sampling, results, plots) talks to a
`Runner` and never knows which one ran. A runner owns every process it starts
and `stop()` must leave none behind.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from bench import nginx
from bench.config import REFERENCE_SERVER, cpu_list
from bench.errors import BenchError, PointFailed
from bench.profiling import (ProfileResult, PythonSupport, SyscallCount, count_syscalls, perf_problem,
                             profile_server, python_perf_args, remove_interpreter_files)
from netns import ns
from netns.config import Topology

REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 5.0
LOG_TAIL_CHARS = 500
PERF_ENV = "SWISSKNIFE_PERF"  # the perf binary the process runner uses (default: perf on PATH)
NOT_PYTHON = PythonSupport((), "none", f"{REFERENCE_SERVER} is a C server: it has no Python frames")


@dataclass(frozen=True)
class ServerUsage:
    """Cumulative figures over all the server's processes (workers, nginx master + worker)."""

    cpu_user_s: float
    cpu_sys_s: float
    peak_rss_kib: int  # sum of each process's peak resident set
    processes: int


@dataclass(frozen=True)
class WrkRun:
    stdout: str
    stderr: str
    returncode: int
    cpu_s: float  # wrk's own user + sys CPU time


class Runner(Protocol):
    name: str

    def check(self) -> None:
        """Raise BenchError naming whatever this runner needs and lacks."""

    def versions(self) -> dict[str, str]:
        """Versions of the tools as this runner runs them (wrk, nginx, ...)."""

    def image(self) -> dict | None:
        """The container image the servers and wrk run from (id, baked-in versions); None on the host."""

    def start_server(self, kind: str, host: str, port: int, profiled: bool = False) -> None:
        """Start server `kind` (or nginx) in the server namespace, pinned, listening on [host]:port;
        `profiled`: with the interpreter options that show Python functions to perf."""

    def server_exit_code(self) -> int | None:
        """None while the server runs, else how it ended."""

    def server_log(self) -> str:
        """The tail of the server's output, for failure reasons."""

    def server_usage(self) -> ServerUsage:
        """CPU and memory of the running server, summed over its processes."""

    def stop_server(self) -> None:
        """Stop the server and everything it started; no-op when none runs."""

    def perf_problem(self) -> str | None:
        """None when perf can profile the servers as this runner runs them; else one line saying what to change."""

    def count_syscalls(self, duration_s: float) -> SyscallCount:
        """The syscalls the running server's processes make in the next `duration_s` seconds."""

    def profile(self, duration_s: float, out_dir: Path, name: str) -> ProfileResult:
        """Sample the running server (started profiled) for `duration_s`: out_dir/name.svg and name.folded."""

    def run_wrk(self, args: Sequence[str], timeout_s: float) -> WrkRun:
        """Run wrk in the client namespace, pinned; raise PointFailed if it outlives timeout_s."""

    def stop(self) -> None:
        """Kill everything this runner started (interrupts, errors)."""


# tool -> Debian package that provides it
PROCESS_TOOLS = {"wrk": "wrk", "nginx": "nginx-light", "taskset": "util-linux"}


class ProcessRunner:
    """Servers and wrk as plain processes entered into the namespaces, each in its own process group."""

    name = "process"

    def __init__(self, topo: Topology, server_cpus: tuple[int, ...], client_cpu: int,
                 python: str = sys.executable) -> None:
        self.topo = topo
        self.server_cpus = server_cpus
        self.client_cpu = client_cpu
        self.python = python  # the interpreter of the Python servers (bench --server-python)
        self.perf = os.environ.get(PERF_ENV, "perf")
        self._server: subprocess.Popen | None = None
        self._support: PythonSupport | None = None  # how the running server shows Python to perf; None: not profiled
        self._scratch: Path | None = None  # the server's log and nginx's files
        self._wrk: subprocess.Popen | None = None

    def check(self) -> None:
        for tool, package in PROCESS_TOOLS.items():
            if shutil.which(tool) is None:
                raise BenchError(f"{tool} is not installed: apt-get install {package}")

    def versions(self) -> dict[str, str]:
        def version(args: list[str]) -> str:
            done = subprocess.run(args, capture_output=True, text=True)
            line = (done.stdout + done.stderr).strip().splitlines()[0]  # both print to stderr
            return re.sub(r"^nginx version: | Copyright.*$", "", line)
        return {"wrk": version(["wrk", "-v"]), "nginx": version(["nginx", "-v"]),
                "server_python": f"{version([self.python, '--version'])} ({self.python})"}

    def image(self) -> dict | None:
        return None

    def server_command(self, kind: str, host: str, port: int, scratch: Path) -> list[str]:
        return server_command(kind, host, port, scratch, self.python, self._support.args if self._support else ())

    @cached_property
    def _python_support(self) -> PythonSupport:
        return python_perf_args(self.python)

    def start_server(self, kind: str, host: str, port: int, profiled: bool = False) -> None:
        self.stop_server()
        if profiled:
            self._support = profiled_support(kind, self._python_support)
        self._scratch = Path(tempfile.mkdtemp(prefix=f"swissknife-{kind}-"))
        command = self.server_command(kind, host, port, self._scratch)
        with open(self._scratch / "server.log", "wb") as log:
            self._server = ns.popen(
                self.topo.server_ns, _pinned(self.server_cpus, command), cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def server_exit_code(self) -> int | None:
        return None if self._server is None else self._server.poll()

    def server_log(self) -> str:
        if self._scratch is None:
            return ""
        return (self._scratch / "server.log").read_text(errors="replace")[-LOG_TAIL_CHARS:].strip()

    def server_pids(self) -> list[int]:
        """The server's processes (reuseport workers, nginx's master and worker); [] when none runs."""
        return [] if self._server is None else [s["pid"] for s in process_tree(self._server.pid)]

    def server_usage(self) -> ServerUsage:
        if self._server is None or self._server.poll() is not None:
            raise PointFailed("the server is not running")
        stats = process_tree(self._server.pid)
        ticks = os.sysconf("SC_CLK_TCK")
        # cutime/cstime carry the CPU of children that already exited and were reaped.
        return ServerUsage(
            cpu_user_s=sum(s["utime"] + s["cutime"] for s in stats) / ticks,
            cpu_sys_s=sum(s["stime"] + s["cstime"] for s in stats) / ticks,
            peak_rss_kib=sum(_peak_rss_kib(s["pid"]) for s in stats),
            processes=len(stats),
        )

    def stop_server(self) -> None:
        if self._server is not None:
            pids = self.server_pids() if self._support else []
            _stop_group(self._server, signal.SIGTERM)
            self._server = None
            remove_interpreter_files(pids)  # perf support's /tmp files, once their processes are gone
        self._support = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def perf_problem(self) -> str | None:
        return perf_problem(self.perf)

    def count_syscalls(self, duration_s: float) -> SyscallCount:
        return count_syscalls(self.server_pids(), duration_s, self.perf)

    def profile(self, duration_s: float, out_dir: Path, name: str) -> ProfileResult:
        if self._support is None:
            raise BenchError("profile() needs a server started with profiled=True")
        return profile_server(self.server_pids(), duration_s, out_dir, name, self._support, self.perf)

    def run_wrk(self, args: Sequence[str], timeout_s: float) -> WrkRun:
        # Files, not pipes: nobody reads while we wait, and a full pipe would stall wrk.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            self._wrk = ns.popen(self.topo.client_ns, _pinned((self.client_cpu,), args),
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
            try:
                returncode, cpu_s = _wait_with_cpu(self._wrk, timeout_s)
            finally:
                _stop_group(self._wrk, signal.SIGKILL)
                self._wrk = None
            out.seek(0)
            err.seek(0)
            return WrkRun(out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                          returncode, cpu_s)

    def stop(self) -> None:
        if self._wrk is not None:
            _stop_group(self._wrk, signal.SIGKILL)
            self._wrk = None
        self.stop_server()


def docker_runner(topo: Topology, server_cpus: tuple[int, ...], client_cpu: int) -> Runner:
    from bench.docker_runner import DockerRunner  # lazy: it imports this module, and the Docker SDK
    return DockerRunner(topo, server_cpus, client_cpu)


RUNNERS = {ProcessRunner.name: ProcessRunner, "docker": docker_runner}


def server_command(kind: str, host: str, port: int, scratch: Path, python: str,
                   python_args: Sequence[str] = ()) -> list[str]:
    """The server's argv (nginx's files written into `scratch`); `python` with `python_args` runs the Python servers."""
    if kind == REFERENCE_SERVER:
        return nginx.prepare(scratch, host, port, _open_file_limit())
    return [python, *python_args, "-m", "servers", kind, "--host", host, "--port", str(port)]


def profiled_support(kind: str, python: PythonSupport) -> PythonSupport:
    """How server `kind` shows Python functions to perf, given its interpreter's support."""
    return NOT_PYTHON if kind == REFERENCE_SERVER else python


def _pinned(cpus: Sequence[int], command: Sequence[str]) -> list[str]:
    # taskset execs the command, so the pid we hold is the server's (or wrk's) own.
    return ["taskset", "--cpu-list", cpu_list(cpus), *command]


def _open_file_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _wait_with_cpu(process: subprocess.Popen, timeout_s: float) -> tuple[int, float]:
    """Reap `process` with wait4 to learn its CPU time; PointFailed past the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
            return process.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            raise PointFailed(f"wrk still running {timeout_s:.0f} s after start; killed")
        time.sleep(0.05)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _stop_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal the process group, wait for the leader, then SIGKILL whatever is left of the group."""
    _signal_group(process.pid, sig)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()
    _signal_group(process.pid, signal.SIGKILL)


def _proc_stat(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/stat") as handle:
        # comm (field 2) may hold spaces and parentheses: split after its last ')'.
        fields = handle.read().rsplit(")", 1)[1].split()
    return {"pid": pid, "ppid": int(fields[1]), "utime": int(fields[11]), "stime": int(fields[12]),
            "cutime": int(fields[13]), "cstime": int(fields[14])}


def process_tree(root: int) -> list[dict[str, int]]:
    """/proc/PID/stat figures of `root` and all its descendants, found by their parent links."""
    stats: dict[int, dict[str, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stats[int(entry)] = _proc_stat(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited while we looked
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat["ppid"], []).append(stat["pid"])
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        if pid in stats:
            tree.append(stats[pid])
            pending.extend(children.get(pid, []))
    return tree


def _peak_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0
