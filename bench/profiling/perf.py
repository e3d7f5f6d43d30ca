"""perf on the server's processes: a flame graph profile, and syscall counts.

Call graphs are DWARF-unwound for every interpreter: frame-pointer unwinding
stops at the first libc or libpython function built without frame pointers
(Debian's and pyenv's builds), leaving Python's C frames as [unknown].
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.profiling.flamegraph import RenderError, render_perf_data
from bench.profiling.offcpu import OffCpuResult, analyse_off_cpu, record_off_cpu

PERF_PERMISSION_HINT = ("run as root or `sysctl kernel.perf_event_paranoid=1`; "
                        "in a container add cap_add: [SYS_ADMIN, SYSLOG]")
DWARF_STACK_BYTES = 16384  # perf's default 8 KiB cuts deep interpreter stacks short of the Python frames
SAMPLE_HZ = 997  # not a multiple of the kernel tick, so samples do not lock onto periodic work
PERF_GRACE_S = 60  # perf's own start-up and write-out beyond the sampling time
PROBE = "import sys; print(getattr(sys, 'is_stack_trampoline_active', lambda: False)())"
# Preferred first: perf_jit writes its own unwind info, so DWARF unwinding crosses Python frames.
PYTHON_METHODS = (("perf_jit", ("-X", "perf_jit")), ("perf", ("-X", "perf")))


@dataclass(frozen=True)
class PythonSupport:
    """How the server's interpreter shows Python functions to perf."""

    args: tuple[str, ...]  # interpreter options to start the server with, e.g. ("-X", "perf_jit")
    method: str  # "perf_jit", "perf" or "none"
    reason: str = ""  # why "none"


@dataclass
class ProfileResult:
    name: str
    status: str  # "ok"; "unavailable" (perf cannot run here); "failed" (perf ran, the rest did not)
    message: str  # one line, empty when ok: what to change or what broke
    python_method: str
    svg: Path | None = None
    folded: Path | None = None
    notes: list[str] = field(default_factory=list)  # what a reader of the graph must know (missing frames)
    # The off-CPU profile of the window after (bench.profiling.offcpu); offcpu_message says why there is none.
    offcpu_svg: Path | None = None
    offcpu_folded: Path | None = None
    wall_svg: Path | None = None
    handoff_us: dict[str, float] | None = None
    offcpu_message: str = ""


@dataclass(frozen=True)
class SyscallCount:
    count: int | None  # None when it could not be measured; `message` says why
    duration_s: float
    message: str = ""

    def per_request(self, requests_per_second: float) -> float | None:
        """Syscalls per request, given the load's request rate over the same steady period."""
        if self.count is None or requests_per_second <= 0:
            return None
        return self.count / self.duration_s / requests_per_second


def python_perf_args(python: str) -> PythonSupport:
    """Ask `python` itself which perf support it has (the server is started with `args`)."""
    try:
        for method, args in PYTHON_METHODS:
            probe = subprocess.run([python, *args, "-c", PROBE], capture_output=True, text=True, timeout=30)
            if probe.stdout.strip() == "True":
                return PythonSupport(args, method)
        version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        return PythonSupport((), "none", f"cannot run {python}: {error}")
    return PythonSupport((), "none", f"Python {version} has no perf support (-X perf needs 3.12+, -X perf_jit "
                                     "3.13+): the graphs show C and kernel frames only, no Python functions")


def _run_perf(command: list[str], timeout_s: float) -> subprocess.CompletedProcess | str:
    """perf's completed process, or one line saying why it could not start."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        return f"perf not found ({command[0]}): install it (Debian: apt-get install linux-perf)"
    except PermissionError:
        return f"perf ({command[0]}) is not executable here"
    except subprocess.TimeoutExpired:
        return f"perf did not finish within {timeout_s:.0f} s"


def _explain_failure(stderr: str, returncode: int) -> str:
    text = stderr.lower()
    if any(sign in text for sign in ("paranoid", "permission", "not permitted", "no access")):
        return f"perf may not sample here: {PERF_PERMISSION_HINT}"
    if "problems finding threads" in text:
        return "perf found no such process: the server exited"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return f"perf failed: {lines[-1] if lines else f'exit status {returncode}'}"


def perf_problem(perf: str = "perf") -> str | None:
    """None when perf can sample with call graphs here; else one line saying what to change."""
    with tempfile.TemporaryDirectory() as scratch:
        probe = _run_perf([perf, "record", "-e", "cpu-clock", "-g", "-o", f"{scratch}/probe.data", "--", "true"], 30)
    if isinstance(probe, str):
        return probe
    return _explain_failure(probe.stderr, probe.returncode) if probe.returncode != 0 else None


def kernel_symbols_hidden() -> bool:
    """True when /proc/kallsyms shows zero addresses: kernel frames would be unnamed."""
    try:
        with open("/proc/kallsyms") as symbols:
            return int(symbols.readline().split()[0], 16) == 0
    except (OSError, IndexError, ValueError):
        return True


def profile_server(pids: list[int], duration: float, out_dir: Path, name: str, python: PythonSupport,
                   perf: str = "perf", flamegraph: str | None = None) -> ProfileResult:
    """Sample `pids` (all their threads) for `duration` s while the caller's load runs, then record where they
    block for another `duration` s (so the load must last 2 × `duration`).

    Writes `<name>.svg` and `<name>.folded`, and the off-CPU files, into `out_dir`; perf.data is removed once
    drawn.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ProfileResult(name, "ok", "", python.method)
    if python.method == "none":
        result.notes.append(python.reason)
    if kernel_symbols_hidden():
        result.notes.append("kernel symbols are hidden (/proc/kallsyms reads zeros): "
                            "add capability SYSLOG or `sysctl kernel.kptr_restrict=0`")
    raw = out_dir / f"{name}.perf.data"
    injected = out_dir / f"{name}.jit.perf.data"
    off_raw = out_dir / f"{name}.offcpu.perf.data"
    # -k 1 (CLOCK_MONOTONIC): the clock perf_jit stamps its records with, for `perf inject --jit`.
    record = [perf, "record", "-e", "cpu-clock", "-F", str(SAMPLE_HZ), "--call-graph", f"dwarf,{DWARF_STACK_BYTES}",
              "-k", "1", "--no-buildid-cache", "-p", ",".join(map(str, pids)), "-o", str(raw),
              "--", "sleep", str(duration)]
    try:
        recorded = _run_perf(record, duration + PERF_GRACE_S)
        if isinstance(recorded, str):
            result.status, result.message = "unavailable", recorded
            return result
        if recorded.returncode != 0 or not raw.exists():
            result.status, result.message = "unavailable", _explain_failure(recorded.stderr, recorded.returncode)
            return result
        # Recorded now, while the load runs; drawn after the on-CPU graph (which takes a while to draw).
        off_problem = record_off_cpu(pids, duration, off_raw, perf)
        folded = _draw_on_cpu(raw, injected, out_dir, name, python, perf, flamegraph, result)
        off = OffCpuResult("unavailable", off_problem) if off_problem else analyse_off_cpu(
            off_raw, out_dir, name, python.method == "perf_jit", folded, perf, flamegraph)
        result.offcpu_svg, result.offcpu_folded, result.wall_svg = off.svg, off.folded, off.wall_svg
        result.handoff_us, result.offcpu_message = off.handoff_us, off.message
    finally:
        for path in (raw, injected, off_raw):
            path.unlink(missing_ok=True)
    return result


def _draw_on_cpu(raw: Path, injected: Path, out_dir: Path, name: str, python: PythonSupport, perf: str,
                 flamegraph: str | None, result: ProfileResult) -> Path | None:
    """The on-CPU graph and folded stacks from `raw` into `result` (its folded stacks returned), or why not."""
    data = raw
    if python.method == "perf_jit":
        inject = _run_perf([perf, "inject", "--jit", "-i", str(raw), "-o", str(injected)], PERF_GRACE_S)
        if isinstance(inject, str) or inject.returncode != 0:
            result.status = "failed"
            result.message = inject if isinstance(inject, str) else _explain_failure(inject.stderr, 1)
            return None
        data = injected
    svg, folded = out_dir / f"{name}.svg", out_dir / f"{name}.folded"
    try:
        render_perf_data(data, svg, folded, f"{name} (Python frames: {python.method})", perf, flamegraph)
    except RenderError as error:
        result.status, result.message = "failed", f"{error} ({_sample_count(raw, perf)})"
        return None
    result.svg, result.folded = svg, folded
    return folded


def _sample_count(data: Path, perf: str) -> str:
    """What perf.data holds, for a graph that could not be drawn: "perf.data: N samples, M lost"."""
    stats = _run_perf([perf, "report", "-i", str(data), "--stats"], PERF_GRACE_S)
    if isinstance(stats, str):
        return stats
    counts = {kind: sum(int(n) for n in re.findall(rf"^\s*{kind} events:\s+(\d+)", stats.stdout, re.M)[:1])
              for kind in ("SAMPLE", "LOST_SAMPLES")}
    return f"perf.data: {counts['SAMPLE']} samples, {counts['LOST_SAMPLES']} lost"


def count_syscalls(pids: list[int], duration: float, perf: str = "perf") -> SyscallCount:
    """Syscalls entered by `pids` (all threads) during `duration` s, from the raw_syscalls tracepoint."""
    command = [perf, "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", ",".join(map(str, pids)),
               "--", "sleep", str(duration)]
    counted = _run_perf(command, duration + PERF_GRACE_S)
    if isinstance(counted, str):
        return SyscallCount(None, duration, counted)
    # CSV line: "186429,,raw_syscalls:sys_enter,..."; "<not counted>" when the processes never ran.
    for line in counted.stderr.splitlines():
        value, _, rest = line.partition(",")
        if "raw_syscalls:sys_enter" in rest and (value.isdigit() or value == "<not counted>"):
            return SyscallCount(int(value) if value.isdigit() else 0, duration)
    if "tracefs" in counted.stderr or "debugfs" in counted.stderr:
        return SyscallCount(None, duration, "perf cannot read tracepoints: mount tracefs "
                                            "(mount -t tracefs nodev /sys/kernel/tracing)")
    return SyscallCount(None, duration, _explain_failure(counted.stderr, counted.returncode))


def remove_interpreter_files(pids: list[int]) -> None:
    """Remove the /tmp files perf support made for `pids` (maps, jit dumps, injected .so); call once they exit."""
    for pid in pids:
        for path in [f"/tmp/perf-{pid}.map", f"/tmp/jit-{pid}.dump", *glob.glob(f"/tmp/jitted-{pid}-*.so")]:
            if os.path.exists(path):
                os.unlink(path)
