"""Off-CPU profiles: where the server's threads wait, each stack weighted by the time it was blocked.

Recorded with perf, with the privileges the on-CPU profile already needs (no eBPF, no bpfcc-tools, which the
image lacks): the software event context-switches sampled at every switch (-c 1) with a DWARF call graph
gives the stack a thread leaves the CPU with; --switch-events gives the moment it leaves (marked preempt
when it was still runnable) and the moment it comes back; sched:sched_wakeup (no call graph), fired in the
waker's thread, gives when a thread of the server woke another. A thread's blocked interval runs from its
switch-out to its next switch-in and is charged to its stack's category (OFF_CPU_CATEGORIES, checked in
order; Python frames only by the leaf-most one); a preempted interval, and the part of any interval after
a wake-up by the server itself, is the run queue. A wait begun before the window is left out; one still
going at its end counts until then; one whose stack sample perf lost (its buffer full: many threads
switching) counts as "no stack".

The hand-off: a worker waiting on its queue (condition) woken by the server's own thread waits on for a CPU,
then, often, for the GIL. Its hand-off time is that run-queue part plus a GIL wait that follows straight on
(inside a container only the GIL part: see handoffs).
"""

from __future__ import annotations

import re
import statistics
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench.profiling.breakdown import Breakdown, Category
from bench.profiling.flamegraph import RenderError, read_folded, render_folded

DWARF_STACK_BYTES = 16384
PERF_GRACE_S = 60
RUN_QUEUE = "run-queue"
OFF_OTHER = "other"
NO_STACK = "no-stack"  # perf lost the switch's stack sample (its buffer was full): the wait is counted, unnamed
FOLLOWS_S = 50e-6  # a GIL wait that starts within this of the hand-off's switch-in is part of it
OFF_CPU_CATEGORIES = (
    Category("sleep", "sleep (clock_nanosleep: /sleep)", (
        r"(__x64_sys_|common_|hrtimer_|do_)?(clock_)?nanosleep\w*|time_sleep|pysleep",)),
    Category("gil", "waiting for the GIL", (
        r"take_gil|PyEval_RestoreThread|PyEval_AcquireThread|_PyThreadState_Attach|PyGILState_Ensure",)),
    Category("readiness", "I/O readiness (epoll_wait, poll, select, io_uring_enter)", (
        r"do_epoll_wait|ep_poll|do_select|core_sys_select|do_sys_poll|do_poll|io_cqring_wait\w*",
        r"(__x64_sys_|__do_sys_)(epoll_p?wait2?|p?select6?|p?poll|ppoll|io_uring_enter)",)),
    Category("condition", "a condition or queue (queue.get, Condition.wait)", (
        r"\[_queue\.cpython[^\]]*\]|_queue_SimpleQueue_get\w*|simplequeue_\w+",
        r"py::(\w+\.)?(wait|get):.*(threading|queue)\.py",)),
    Category("lock", "a lock (threading.Lock, PyMutex, a mutex)", (
        r"PyThread_acquire_lock\w*|acquire_timed|lock_PyThread_acquire_lock|rlock_acquire\w*",
        r"_PyMutex_\w+|_PyParkingLot_Park|_PySemaphore_Wait|pthread_mutex_\w*lock\w*|__lll_lock_wait\w*",)),
    Category("futex", "another futex wait", (r"(__x64_sys_|do_|__)?futex_wait\w*|__x64_sys_futex",)),
    Category("socket", "waiting in recv, send or accept (sockets without O_NONBLOCK)", (
        r"sk_wait_data|inet_csk_accept|inet_csk_wait_for_connect|sk_stream_wait_memory|wait_woken",)),
)
LABELS = {c.name: c.label for c in OFF_CPU_CATEGORIES} | {RUN_QUEUE: "the run queue (runnable, no CPU)",
                                                          OFF_OTHER: "other", NO_STACK: "no stack (lost)"}
_COMPILED = [(c.name, re.compile("|".join(f"(?:{p})" for p in c.patterns))) for c in OFF_CPU_CATEGORIES]
_SUFFIX = re.compile(r"(\.(isra|constprop|part|cold|lto_priv)\.\d+)+$|@.*$")
_HEADER = re.compile(r"^\s*(\d+)\s+(\d+\.\d+):\s+(.*)$")
_WOKEN = re.compile(r"\bpid=(\d+)")
_FRAME = re.compile(r"^\s*[0-9a-f]+ (.+?)(?: \((.*)\))?$")


def off_cpu_names() -> list[str]:
    return [RUN_QUEUE, *(c.name for c in OFF_CPU_CATEGORIES), OFF_OTHER, NO_STACK]


def classify_blocked(frames: list[str]) -> str:
    """The category of a stack a thread blocked with (frames root first): the first of OFF_CPU_CATEGORIES
    any native frame, or the leaf-most Python frame, matches."""
    python = [frame for frame in frames if frame.startswith("py::")]
    candidates = [_SUFFIX.sub("", frame) for frame in frames if not frame.startswith("py::")] + python[-1:]
    for name, pattern in _COMPILED:
        if any(pattern.fullmatch(frame) for frame in candidates):
            return name
    return OFF_OTHER


@dataclass
class Interval:
    tid: int
    start: float
    end: float
    category: str
    frames: list[str]


@dataclass
class OffCpuResult:
    status: str  # "ok" | "unavailable" | "failed", as ProfileResult's
    message: str
    svg: Path | None = None
    folded: Path | None = None  # "category;root;...;leaf ns" per line
    wall_svg: Path | None = None  # on-CPU and off-CPU together: what the threads did with their wall time
    handoff_us: dict[str, float] | None = None  # count, mean, p50, p99 of the queue hand-offs (None: none)


def parse_script(text: str) -> list[Interval]:
    """The blocked intervals in `perf script --show-switch-events -F tid,time,event,trace,ip,sym,dso` output."""
    stacks: dict[int, list[str]] = {}  # tid -> the stack of its last context-switches sample, leaf first
    out: dict[int, tuple[float, list[str], bool]] = {}  # tid -> switched out when, with what, preempted
    woken: dict[int, float] = {}
    intervals: list[Interval] = []
    collecting: list[str] | None = None
    last = 0.0

    def close(tid: int, end: float) -> None:
        start, frames, preempted = out.pop(tid)
        category = classify_blocked(frames) if frames else NO_STACK
        wake = woken.pop(tid, None)
        if preempted:
            intervals.append(Interval(tid, start, end, RUN_QUEUE, frames))
        elif wake is not None and start <= wake <= end:
            intervals.append(Interval(tid, start, wake, category, frames))
            intervals.append(Interval(tid, wake, end, RUN_QUEUE, frames))
        else:
            intervals.append(Interval(tid, start, end, category, frames))

    for line in text.splitlines():
        header = _HEADER.match(line)
        if not header:
            if collecting is not None and (frame := _FRAME.match(line)):  # "ffff... symbol (dso)"
                symbol, dso = frame[1], frame[2]  # an unknown symbol named by its file, as inferno does
                collecting.append(f"[{Path(dso).name}]" if symbol == "[unknown]" and dso else symbol)
            continue
        tid, time, event = int(header[1]), float(header[2]), header[3]
        last = max(last, time)
        collecting = None
        if event.startswith("PERF_RECORD_SWITCH OUT"):
            out[tid] = (time, list(reversed(stacks.pop(tid, []))), "preempt" in event)
        elif event.startswith("PERF_RECORD_SWITCH IN"):
            if tid in out:
                close(tid, time)
        elif "sched_wakeup" in event:
            if (target := _WOKEN.search(event)) and int(target[1]) in out:
                woken.setdefault(int(target[1]), time)
        elif "context-switches" in event:
            collecting = stacks[tid] = []
    for tid in list(out):
        close(tid, last)
    return intervals


def folded_lines(intervals: list[Interval]) -> Counter[str]:
    """Stack -> ns blocked, each stack rooted in its category's label."""
    stacks: Counter[str] = Counter()
    for interval in intervals:
        stacks[";".join([LABELS[interval.category], *interval.frames])] += round((interval.end - interval.start)
                                                                                  * 1e9)
    return stacks


def handoffs(intervals: list[Interval]) -> list[float]:
    """Seconds per hand-off: what follows a condition wait straight on, its run-queue tail and then a GIL wait.

    Inside a container sched_wakeup names the woken thread by its host pid, which perf's tids (the
    container's) never match: there the run-queue tail stays part of the condition wait, and only the GIL
    wait counts.
    """
    by_thread: dict[int, list[Interval]] = defaultdict(list)
    for interval in sorted(intervals, key=lambda i: i.start):
        by_thread[interval.tid].append(interval)
    found = []
    for steps in by_thread.values():
        for at, step in enumerate(steps):
            if step.category != "condition":
                continue
            wait, end, rest = 0.0, step.end, steps[at + 1:at + 3]
            if rest and rest[0].category == RUN_QUEUE and rest[0].start == end:
                wait, end, rest = rest[0].end - rest[0].start, rest[0].end, rest[1:]
            if rest and rest[0].category == "gil" and rest[0].start - end < FOLLOWS_S:
                wait += rest[0].end - rest[0].start
            found.append(wait)
    return found


def summary_us(waits: list[float]) -> dict[str, float] | None:
    if not waits:
        return None
    ordered = sorted(waits)
    return {"count": len(ordered), "mean": 1e6 * statistics.fmean(ordered),
            "p50": 1e6 * ordered[len(ordered) // 2], "p99": 1e6 * ordered[min(len(ordered) - 1,
                                                                                int(len(ordered) * 0.99))]}


def off_cpu_breakdown(folded: Path) -> Breakdown:
    """Blocked ns per off-CPU category, from an off-CPU folded file (its root frames)."""
    by_label = {label: name for name, label in LABELS.items()}
    weights: Counter[str] = Counter()
    for stack, count in read_folded(folded).items():
        weights[by_label.get(stack.split(";", 1)[0], OFF_OTHER)] += count
    return Breakdown(dict(weights))


def off_cpu_table(breakdowns: dict[str, Breakdown]) -> str:
    """One row per server: the share of its threads' blocked time per category, and the total."""
    names = off_cpu_names()
    header = "| server | blocked (thread-s) | " + " | ".join(LABELS[name] for name in names) + " |"
    rule = "|---|---:" + "|---:" * len(names) + "|"
    rows = []
    for server, found in breakdowns.items():
        total = found.total or 1
        shares = " | ".join(f"{100 * found.weights.get(name, 0) / total:.1f}%" for name in names)
        rows.append(f"| {server} | {found.total / 1e9:.2f} | {shares} |")
    return "\n".join([header, rule, *rows]) + "\n"


def _perf(command: list[str], timeout_s: float) -> subprocess.CompletedProcess | str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{command[0]} {command[1]}: {error}"


def _why(done: subprocess.CompletedProcess | str) -> str:
    if isinstance(done, str):
        return done
    return (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]


def record_off_cpu(pids: list[int], duration: float, raw: Path, perf: str = "perf") -> str | None:
    """Record `pids` (all threads) blocking for `duration` s into `raw`; None, else why it could not."""
    record = [perf, "record", "-e", "context-switches", "-c", "1", "-e", "sched:sched_wakeup/call-graph=no/",
              "--switch-events", "--call-graph", f"dwarf,{DWARF_STACK_BYTES}", "-k", "1", "--no-buildid-cache",
              "-p", ",".join(map(str, pids)), "-o", str(raw), "--", "sleep", str(duration)]
    recorded = _perf(record, duration + PERF_GRACE_S)
    if isinstance(recorded, str) or recorded.returncode != 0 or not raw.exists():
        return f"perf record (off-CPU) failed: {_why(recorded)}"
    return None


def analyse_off_cpu(raw: Path, out_dir: Path, name: str, jit: bool, on_cpu_folded: Path | None = None,
                    perf: str = "perf", flamegraph: str | None = None) -> OffCpuResult:
    """From a record_off_cpu recording, write `<name>.offcpu.{folded,svg}` and, given the on-CPU folded
    stacks of the window before, `<name>.wall.svg`; `raw` is removed."""
    injected = raw.with_suffix(".jit.data")
    try:
        data = raw
        if jit:
            inject = _perf([perf, "inject", "--jit", "-i", str(raw), "-o", str(injected)], PERF_GRACE_S)
            if isinstance(inject, str) or inject.returncode != 0:
                return OffCpuResult("failed", f"perf inject --jit (off-CPU) failed: {_why(inject)}")
            data = injected
        script = _perf([perf, "script", "-i", str(data), "--show-switch-events", "--no-inline",
                        "-F", "tid,time,event,trace,ip,sym,dso"], 5 * PERF_GRACE_S)
        if isinstance(script, str) or script.returncode != 0:
            return OffCpuResult("failed", f"perf script (off-CPU) failed: {_why(script)}")
        intervals = parse_script(script.stdout)
        if not intervals:
            return OffCpuResult("failed", "no blocked interval in the window")
        stacks = folded_lines(intervals)
        folded, svg = out_dir / f"{name}.offcpu.folded", out_dir / f"{name}.offcpu.svg"
        folded.write_text("".join(f"{stack} {ns}\n" for stack, ns in sorted(stacks.items())))
        render_folded(folded, svg, f"{name}: off-CPU, ns blocked per stack", flamegraph)
        result = OffCpuResult("ok", "", svg, folded, handoff_us=summary_us(handoffs(intervals)))
        if on_cpu_folded and on_cpu_folded.exists():
            wall = out_dir / f"{name}.wall.folded"
            on = read_folded(on_cpu_folded)
            wall.write_text("".join(f"on-CPU;{stack} {count}\n" for stack, count in sorted(on.items()))
                            + "".join(f"off-CPU;{stack} {ns}\n" for stack, ns in sorted(stacks.items())))
            result.wall_svg = render_folded(wall, out_dir / f"{name}.wall.svg",
                                            f"{name}: on-CPU and off-CPU, ns of thread time (two windows)",
                                            flamegraph)
            wall.unlink()
        return result
    except RenderError as error:
        return OffCpuResult("failed", str(error))
    finally:
        raw.unlink(missing_ok=True)
        injected.unlink(missing_ok=True)


def profile_off_cpu(pids: list[int], duration: float, out_dir: Path, name: str, jit: bool,
                    perf: str = "perf", flamegraph: str | None = None) -> OffCpuResult:
    """record_off_cpu, then analyse_off_cpu (without an on-CPU graph)."""
    raw = out_dir / f"{name}.offcpu.perf.data"
    if problem := record_off_cpu(pids, duration, raw, perf):
        return OffCpuResult("unavailable", problem)
    return analyse_off_cpu(raw, out_dir, name, jit, None, perf, flamegraph)
