"""What /proc says about processes and the machine: the one place that parses its fields.

proc(5): /proc/PID/stat is `pid (comm) state ppid pgrp session ...`; comm may hold
spaces and parentheses, so the fields are split after its last ')'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat that bench uses; CPU times in clock ticks."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    utime: int
    stime: int
    cutime: int  # children already exited and reaped
    cstime: int
    start_ticks: int  # since boot: with the pid, it names one process
    command: str  # comm: the executable's name, cut to 15 characters


def stat(pid: int, proc: Path = Path("/proc")) -> ProcStat:
    """Raises FileNotFoundError (or ProcessLookupError) once the process is gone."""
    return _parse(pid, (proc / str(pid) / "stat").read_text())


def _parse(pid: int, text: str) -> ProcStat:
    command, rest = text.split("(", 1)[1].rsplit(")", 1)
    fields = rest.split()
    # fields[0] is field 3 of proc(5), the state.
    return ProcStat(pid, fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[11]),
                    int(fields[12]), int(fields[13]), int(fields[14]), int(fields[19]), command)


def stat_or_none(pid: int, proc: Path = Path("/proc")) -> ProcStat | None:
    try:
        return stat(pid, proc)
    except (FileNotFoundError, ProcessLookupError):
        return None


def process_tree(root: int, proc: Path = Path("/proc")) -> list[ProcStat]:
    """`root` and all its descendants, found by their parent links (`proc`: where /proc is seen)."""
    stats = {s.pid: s for s in (stat_or_none(int(e), proc) for e in os.listdir(proc) if e.isdigit()) if s}
    children: dict[int, list[int]] = {}
    for found in stats.values():
        children.setdefault(found.ppid, []).append(found.pid)
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        if pid in stats:
            tree.append(stats[pid])
            pending.extend(children.get(pid, []))
    return tree


def tree_cpu_s(tree: list[ProcStat]) -> tuple[float, float]:
    """(user, system) CPU seconds of the processes, with their reaped children's."""
    return (sum(s.utime + s.cutime for s in tree) / CLOCK_TICKS,
            sum(s.stime + s.cstime for s in tree) / CLOCK_TICKS)


def _status_kib(pid: int | str, key: str, proc: Path) -> int:
    """A kB field of /proc/PID/status; 0 once the process is gone."""
    try:
        with open(proc / str(pid) / "status") as handle:
            for line in handle:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


# The container engine's processes by command name (/proc/PID/comm, cut to 15 characters):
# containerd-shim-runc-v2 shows as containerd-shim. runc, the short-lived per-exec helper, is reaped
# by the shim, so its CPU reaches the shim's children's times.
ENGINE_COMMANDS = frozenset({"dockerd", "containerd", "containerd-shim", "runc"})
HOST_PROC_ENV = "SWISSKNIFE_HOST_PROC"  # where the host's /proc is seen (the compose bench mounts it at /host/proc)


def host_proc() -> Path:
    return Path(os.environ.get(HOST_PROC_ENV, "/proc"))


def engine_cpu(proc: Path | None = None) -> dict[tuple[int, int], float]:
    """(pid, start) -> CPU seconds so far (own and reaped children's) of each container engine process."""
    proc = proc or host_proc()
    found = {}
    for found_stat in (stat_or_none(int(e), proc) for e in os.listdir(proc) if e.isdigit()):
        if found_stat is not None and found_stat.command in ENGINE_COMMANDS:
            ticks = found_stat.utime + found_stat.stime + found_stat.cutime + found_stat.cstime
            found[found_stat.pid, found_stat.start_ticks] = ticks / CLOCK_TICKS
    return found


def engine_cpu_delta(before: dict[tuple[int, int], float], after: dict[tuple[int, int], float]) -> float:
    """The engine's CPU between two `engine_cpu` samples; a process born in between counts whole."""
    return sum(seconds - before.get(key, 0.0) for key, seconds in after.items())
def peak_rss_kib(pid: int | str, proc: Path = Path("/proc")) -> int:
    """VmHWM: the process's peak resident set; 0 once it is gone."""
    return _status_kib(pid, "VmHWM", proc)


def rss_kib(pid: int | str, proc: Path = Path("/proc")) -> int:
    """VmRSS: the process's resident set now; 0 once it is gone."""
    return _status_kib(pid, "VmRSS", proc)


def kernel_socket_kib() -> int:
    """The kernel memory sockets live in, machine-wide: slab caches (socket, file, inode and epoll
    objects among them: /proc/meminfo Slab) plus TCP buffers (/proc/net/sockstat `TCP ... mem`, pages)."""
    with open("/proc/meminfo") as handle:
        slab = next(int(line.split()[1]) for line in handle if line.startswith("Slab:"))
    with open("/proc/net/sockstat") as handle:
        tcp = next(line.split() for line in handle if line.startswith("TCP:"))
    return slab + int(tcp[tcp.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def thread_limit() -> tuple[int, str]:
    """How many threads the kernel lets exist here, and the limit that says so: each thread takes a pid
    and a task (kernel.pid_max, kernel.threads-max) and two memory maps, its stack and guard
    (vm.max_map_count, per process)."""
    def sysctl(key: str) -> int:
        return int(Path("/proc/sys/" + key.replace(".", "/")).read_text())
    limits = {"kernel.pid_max": sysctl("kernel.pid_max"), "kernel.threads-max": sysctl("kernel.threads-max"),
              "vm.max_map_count / 2": sysctl("vm.max_map_count") // 2}
    name = min(limits, key=limits.__getitem__)
    return limits[name], f"{name} = {limits[name]:,}"


def host_busy_s() -> float:
    """CPU seconds all CPUs of the machine have spent not idle (first line of /proc/stat)."""
    with open("/proc/stat") as handle:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, handle.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
