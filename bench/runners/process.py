"""The process runner: servers and wrk as plain processes entered into the namespaces."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from bench import procfs, subjects
from bench.config import cpu_list
from bench.errors import BenchError, PointFailed
from bench.network import Namespaces, Network
from bench.profiling import (
    ProfileResult,
    PythonSupport,
    SyscallCount,
    count_syscalls,
    perf_problem,
    profile_server,
    python_perf_args,
    remove_interpreter_files,
)
from bench.runners.base import (
    LOG_TAIL_CHARS,
    PYTHON_PROBE,
    REPO_ROOT,
    STOP_GRACE_S,
    LoadWindow,
    ServerUsage,
    WrkRun,
    probe_answer,
    profiled_support,
    resolve_python,
    server_command,
    tree_usage,
)
from netns import ns
from netns.config import Topology

# A server whose bench dies (even by SIGKILL) gets SIGTERM, on which every server shuts down with
# its workers (reuseport's processes, nginx's worker): SIGKILL would leave those orphaned.
SERVER_PARENT_DEATH_SIGNAL = signal.SIGTERM
PERF_ENV = "SWISSKNIFE_PERF"  # the perf binary the process runner uses (default: perf on PATH)
# tool -> Debian package that provides it (and the subjects' own, bench.subjects)
PROCESS_TOOLS = {"wrk": "wrk", "taskset": "util-linux"}


def tools() -> dict[str, str]:
    return PROCESS_TOOLS | {tool: package for s in subjects.REGISTRY.subjects.values() for tool, package in s.tools}


class ProcessRunner:
    """Servers and wrk as plain processes entered into the namespaces, each in its own process group."""

    name = "process"

    def __init__(self, topo: Topology, server_cpus: tuple[int, ...], client_cpu: int,
                 python: str = sys.executable) -> None:
        self.topo = topo
        self.server_cpus = server_cpus
        self.client_cpu = client_cpu
        self.python = resolve_python(python)  # the interpreter of the Python servers (bench --server-python)
        self.perf = os.environ.get(PERF_ENV, "perf")
        self._server: subprocess.Popen | None = None
        self._support: PythonSupport | None = None  # how the running server shows Python to perf; None: not profiled
        self._scratch: Path | None = None  # the server's log and nginx's files
        self._wrk: subprocess.Popen | None = None

    def check(self) -> None:
        for tool, package in tools().items():
            if shutil.which(tool) is None:
                raise BenchError(f"{tool} is not installed: apt-get install {package}")
        self.server_python()

    def versions(self) -> dict[str, str]:
        def version(args: list[str]) -> str:
            done = subprocess.run(args, capture_output=True, text=True)
            line = (done.stdout + done.stderr).strip().splitlines()[0]  # both print to stderr
            return re.sub(r"^\S+ version: | Copyright.*$", "", line)
        return {tool: version([tool, "-v"]) for tool in tools() if tool != "taskset"} | {
            "server_python": f"{version([self.python, '--version'])} ({self.python})"}

    def image(self) -> dict | None:
        return None

    def server_python(self) -> dict:
        return self._server_python

    @cached_property
    def _server_python(self) -> dict:
        try:
            done = subprocess.run([self.python, "-c", PYTHON_PROBE], cwd=REPO_ROOT, capture_output=True, text=True)
        except OSError as error:
            return probe_answer(self.python, "on this host", 1, "", str(error))
        return probe_answer(self.python, "on this host", done.returncode, done.stdout, done.stderr)

    def server_command(self, kind: str, host: str, port: int, scratch: Path, workers: int | None = None) -> list[str]:
        return server_command(kind, host, port, scratch, self.python, self._support.args if self._support else (),
                              workers)

    @cached_property
    def _python_support(self) -> PythonSupport:
        return python_perf_args(self.python)

    def start_server(self, kind: str, host: str, port: int, profiled: bool = False,
                     workers: int | None = None) -> None:
        self.stop_server()
        if profiled:
            self._support = profiled_support(kind, self._python_support)
        self._scratch = Path(tempfile.mkdtemp(prefix=f"swissknife-{kind}-"))
        command = self.server_command(kind, host, port, self._scratch, workers)
        with open(self._scratch / "server.log", "wb") as log:
            self._server = ns.popen(
                self.topo.server_ns, _pinned(self.server_cpus, command), cwd=REPO_ROOT,
                parent_death_signal=SERVER_PARENT_DEATH_SIGNAL,
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
        return [] if self._server is None else [s.pid for s in procfs.process_tree(self._server.pid)]

    def server_usage(self) -> ServerUsage:
        if self._server is None or self._server.poll() is not None:
            raise PointFailed("the server is not running")
        return tree_usage(self._server.pid)

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

    def run_wrk(self, args: Sequence[str], timeout_s: float) -> list[WrkRun]:
        # Files, not pipes: nobody reads while we wait, and a full pipe would stall wrk.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            with LoadWindow() as load:
                self._wrk = ns.popen(self.topo.client_ns, _pinned((self.client_cpu,), args),
                                     parent_death_signal=signal.SIGKILL, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=err, start_new_session=True)
                try:
                    returncode, cpu_s = _wait_with_cpu(self._wrk, timeout_s)
                finally:
                    _stop_group(self._wrk, signal.SIGKILL)
                    self._wrk = None
            out.seek(0)
            err.seek(0)
            return [WrkRun(out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                           returncode, cpu_s, load.host_busy_s, load.engine_cpu_s)]

    def network(self) -> Network:
        return Namespaces(self.topo)

    def engines(self) -> list[dict]:
        return []

    def stop(self) -> None:
        if self._wrk is not None:
            _stop_group(self._wrk, signal.SIGKILL)
            self._wrk = None
        self.stop_server()


def _pinned(cpus: Sequence[int], command: Sequence[str]) -> list[str]:
    # taskset execs the command, so the pid we hold is the server's (or wrk's) own.
    return ["taskset", "--cpu-list", cpu_list(cpus), *command]


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
