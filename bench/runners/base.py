"""The Runner protocol: the one thing that differs between host and containers.

Everything else in bench (verification, sampling, results, plots) talks to a
`Runner` and never knows which one ran. A runner owns every process it starts
and `stop()` must leave none behind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench import procfs, subjects
from bench.errors import BenchError
from bench.network import Network
from bench.profiling import ProfileResult, PythonSupport, SyscallCount

REPO_ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 5.0
LOG_TAIL_CHARS = 500
SERVER_TIMEOUT_S = 3600  # the Python servers' header and idle timeouts in a sweep (nginx's: bench/nginx.py)

# --server-python names for the two interpreters of swissknife-ft:latest (docker/Dockerfile.ft): built
# from the source of the image's python3.13 with the same flags, they differ in the GIL alone.
NAMED_PYTHONS = {"free-threaded": "/opt/python-ft/bin/python3.13t", "gil": "/opt/python-gil/bin/python3.13"}
FT_IMAGE = "swissknife-ft:latest"
FT_BUILD = "sudo docker/build.sh --free-threaded"
# Run by the server's interpreter from the project directory, after the servers' own imports (a C
# extension without free-threading support would switch the GIL back on): what results.json records.
PYTHON_PROBE = (
    "import json, platform, sys, sysconfig; import servers.kinds; print(json.dumps({"
    "'executable': sys.executable, 'version': platform.python_version(), 'implementation': sys.version, "
    "'free_threaded_build': bool(sysconfig.get_config_var('Py_GIL_DISABLED')), "
    "'gil_enabled': getattr(sys, '_is_gil_enabled', lambda: True)()}))"
)


def resolve_python(python: str) -> str:
    """A --server-python value as a path: a name of NAMED_PYTHONS, or the path itself."""
    return NAMED_PYTHONS.get(python, python)


def probe_answer(python: str, where: str, returncode: int, out: str, err: str) -> dict:
    """PYTHON_PROBE's answer, or BenchError saying that `python` cannot run the servers `where`."""
    if returncode != 0:
        hint = (f"; it is in the {FT_IMAGE} image: use --runner docker (build the image: {FT_BUILD})"
                if python in NAMED_PYTHONS.values() and where == "on this host" else "")
        last = (err.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"--server-python {python} cannot run the servers {where} ({last}){hint}")
    return json.loads(out)


@dataclass(frozen=True)
class ServerUsage:
    """Cumulative figures over all the server's processes (workers, nginx master + worker)."""

    cpu_user_s: float
    cpu_sys_s: float
    peak_rss_kib: int  # sum of each process's peak resident set
    processes: int
    rss_kib: int  # resident set now, summed over the processes


def tree_usage(root: int, proc: Path = Path("/proc")) -> ServerUsage:
    """ServerUsage of process `root` and its descendants, as `proc` shows them: how both runners measure
    a server on this host (the docker runner through the host's /proc, from its container's first process)."""
    tree = procfs.process_tree(root, proc)
    user_s, sys_s = procfs.tree_cpu_s(tree)
    return ServerUsage(user_s, sys_s, peak_rss_kib=sum(procfs.peak_rss_kib(s.pid, proc) for s in tree),
                       processes=len(tree), rss_kib=sum(procfs.rss_kib(s.pid, proc) for s in tree))


@dataclass(frozen=True)
class WrkRun:
    stdout: str
    stderr: str
    returncode: int
    cpu_s: float  # wrk's own user + sys CPU time
    # The machine while wrk ran (sampled just before it started and just after it ended, so the
    # runner's own set-up and clean-up are outside): every CPU's busy time, and the container
    # engine's CPU (dockerd, containerd, shims, runc) without wrk's. None: not measured (other machines).
    host_busy_s: float | None
    engine_cpu_s: float | None
    engine: str | None = None  # the client engine it ran on (several machines); None on one host


class LoadWindow:
    """`with LoadWindow() as load:` around wrk's run; then load.host_busy_s and load.engine_cpu_s."""

    def __enter__(self) -> LoadWindow:
        self._engine = procfs.engine_cpu()  # the /proc scan first: its own CPU stays outside the window
        self._busy = procfs.host_busy_s()
        return self

    def __exit__(self, *_: object) -> None:
        self.host_busy_s = procfs.host_busy_s() - self._busy
        self.engine_cpu_s = procfs.engine_cpu_delta(self._engine, procfs.engine_cpu())


class Runner(Protocol):
    name: str

    def check(self) -> None:
        """Raise BenchError naming whatever this runner needs and lacks."""

    def versions(self) -> dict[str, str]:
        """Versions of the tools as this runner runs them (wrk, nginx, ...)."""

    def image(self) -> dict | None:
        """The container image the servers and wrk run from (id, baked-in versions); None on the host."""

    def server_python(self) -> dict:
        """PYTHON_PROBE's answer from the servers' interpreter as this runner runs it (BenchError if it cannot)."""

    def start_server(self, kind: str, host: str, port: int, profiled: bool = False,
                     workers: int | None = None) -> None:
        """Start server `kind` (or nginx) in the server namespace, pinned, listening on [host]:port;
        `profiled`: with the interpreter options that show Python functions to perf; `workers`: processes
        of a multi-process model (None: its default)."""

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

    def run_wrk(self, args: Sequence[str], timeout_s: float) -> list[WrkRun]:
        """Run wrk in the client namespace (or on each client engine, all started together), pinned;
        raise PointFailed if it outlives timeout_s."""

    def network(self) -> Network:
        """How the sweep reaches the servers this runner starts (after check())."""

    def engines(self) -> list[dict]:
        """The Docker engines every role ran on (engines.Engine.describe): one "local" on one host; [] without
        Docker."""

    def stop(self) -> None:
        """Kill everything this runner started (interrupts, errors)."""


def server_command(kind: str, host: str, port: int, scratch: Path, python: str, python_args: Sequence[str] = (),
                   workers: int | None = None, directory: str | None = None) -> list[str]:
    """Server `kind`'s argv from its description (bench.subjects): `python` with `python_args` for {python},
    `scratch` for {scratch}, `workers` (None: its default), `directory` for {dir} (None: the subject file's
    folder as described)."""
    subject = subjects.get(kind)
    values = {"host": host, "port": str(port), "scratch": str(scratch),
              # Outlast a (server, workload) group: the idle connections are held across all its points.
              "timeout": str(SERVER_TIMEOUT_S), **({"dir": directory} if directory else {})}
    return subject.argv([python, *python_args], values, workers)


def profiled_support(kind: str, python: PythonSupport) -> PythonSupport:
    """How server `kind` shows Python functions to perf, given its interpreter's support."""
    if subjects.get(kind).python_frames:
        return python
    return PythonSupport((), "none", f"{kind} is not a Python server started through {{python}}: no Python frames")
