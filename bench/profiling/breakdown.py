"""Where the time goes: each sampled stack put in one category, defined here once by function names.

Rule: a stack belongs to the category of its leaf-most frame that matches any
pattern; if that frame matches several categories, the earlier in CATEGORIES
wins; a stack with no matching frame is OTHER. Leaf-most, because a sample is
charged to what the CPU was doing: TCP work under a send() called from Python
is network time, not Python time.

Scheduler functions (schedule, __schedule, finish_task_switch) match nothing on
purpose: every blocking call goes through them, so the leaf-most-match rule
charges a context switch to what blocked (epoll_wait, a futex, a recv).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.profiling.flamegraph import read_folded

OTHER = "other"


@dataclass(frozen=True)
class Category:
    name: str
    label: str
    patterns: tuple[str, ...]  # regular expressions, each matching a whole function name


CATEGORIES = (
    Category("multiplexing", "I/O multiplexing (select, poll, epoll, io_uring)", (
        r"(__x64_sys_|__se_sys_|__do_sys_|do_)?(p?select6?|p?poll|epoll_(wait|pwait2?|ctl|create1?))",
        r"__(GI___)?(p?poll|p?select)", r"core_sys_select", r"do_sys_poll", r"do_epoll_\w+", r"ep_\w+",
        r"(sock|tcp|datagram)_poll",  # the per-descriptor readiness check select and poll repeat per call
        r"__pollwait|poll_freewait|poll_initwait|poll_select_\w+|select_estimate_accuracy",
        r"select_(select|poll|epoll)\w*|pyepoll_\w+|seq2set|set2list",  # CPython's select module
        r"(__x64_sys_|__do_sys_)?io_uring_\w+|io_cqring_wait\w*|io_submit_sqes",  # submitting and awaiting completions
    )),
    Category("network", "socket send/recv and the kernel network stack", (
        r"(__)?(tcp6?|ipv?6?|inet6?|veth|sock|sk|skb|napi|netif|dev|neigh|fib6|rt6|dst|raw6|icmpv6|bbr|nf)_\w+",
        r"net_rx_action|process_backlog|(__)?kfree_skb\w*|consume_skb|(__)?alloc_skb\w*|(lock|release)_sock\w*",
        r"__release_sock|do_accept|security_sock(et)?_\w+",
        r"(__x64_sys_|__sys_)(send|recv|sendto|recvfrom|sendmsg|recvmsg|accept4?|shutdown)",
        r"(__libc_|__)?(send|recv|sendto|recvfrom|sendmsg|recvmsg|accept4?)",  # libc wrappers
    )),
    Category("locks", "threads, locks and the GIL", (
        r"(__x64_sys_|do_|__)?futex\w*", r"take_gil|drop_gil|PyEval_(Save|Restore|Acquire|Release)Thread",
        r"_PyThreadState_(Attach|Detach)|_?PyMutex_\w+|_PySemaphore_\w+|_PyParkingLot_\w+",
        r"PyThread_(acquire|release)_lock\w*|lock_PyThread_\w+|acquire_timed|rlock_\w+",
        r"_*pthread_(cond|mutex|rwlock)_\w+|__lll_\w+|(__new_)?sem_\w+|(__x64_sys_|do_)?sched_yield",
    )),
    Category("python", "Python code (HTTP handling, event loop)", (
        r"py::.*", r"_?Py[A-Z_]\w*", r"py_trampoline\w*",
    )),
)

_COMPILED = [(category.name, re.compile("|".join(f"(?:{p})" for p in category.patterns)))
             for category in CATEGORIES]
# Compiler clones and symbol versions: tcp_poll.isra.0, pthread_mutex_lock@@GLIBC_2.2.5, recv@plt.
_SUFFIX = re.compile(r"(\.(isra|constprop|part|cold|lto_priv)\.\d+)+$|@.*$")


def _frame_category(frame: str) -> str | None:
    if not frame.startswith("py::"):
        frame = _SUFFIX.sub("", frame)
    for name, pattern in _COMPILED:
        if pattern.fullmatch(frame):
            return name
    return None


def classify(stack: str) -> str:
    """The category of one folded stack ("root;...;leaf")."""
    for frame in reversed(stack.split(";")):
        category = _frame_category(frame)
        if category:
            return category
    return OTHER


def lock_path(stack: str) -> str | None:
    """Where a stack charged to locks took its lock: the leaf-most Python function, the named C frames from
    there to the first lock frame, and how that one waits ("py::route:… → dict_get → PyMutex_Lock →
    __sched_yield"); None if the stack is not a lock's."""
    if classify(stack) != "locks":
        return None
    frames = [frame for frame in stack.split(";")
              if not frame.startswith("[") and frame not in ("_PyEval_EvalFrameDefault", "PyObject_Vectorcall")]
    lock_at = next(at for at in range(len(frames) - 1, -1, -1) if _frame_category(frames[at]) == "locks")
    python_at = max((at for at in range(lock_at) if frames[at].startswith("py::")), default=-1)
    first_lock = next(at for at in range(python_at + 1, lock_at + 1) if _frame_category(frames[at]) == "locks")
    return " → ".join(frames[max(python_at, 0):first_lock + 2])


def heaviest_lock_path(folded: Path) -> tuple[str, float] | None:
    """The lock path (lock_path) holding the most samples, and its percent of all the samples."""
    stacks = read_folded(folded)
    paths: Counter[str] = Counter()
    for stack, count in stacks.items():
        if path := lock_path(stack):
            paths[path] += count
    if not paths:
        return None
    path, count = paths.most_common(1)[0]
    return path, 100 * count / sum(stacks.values())


@dataclass(frozen=True)
class Breakdown:
    weights: dict[str, int]  # category name -> sampled weight (perf's cpu-clock periods, in ns)

    @property
    def total(self) -> int:
        return sum(self.weights.values())

    def shares(self) -> dict[str, float]:
        """Percent of the samples per category, in CATEGORIES order then OTHER; sums to 100."""
        total = self.total or 1
        return {name: 100 * self.weights.get(name, 0) / total for name in category_names()}


def category_names() -> list[str]:
    return [category.name for category in CATEGORIES] + [OTHER]


def breakdown(folded: Path) -> Breakdown:
    weights: Counter[str] = Counter()
    for stack, count in read_folded(folded).items():
        weights[classify(stack)] += count
    return Breakdown(dict(weights))


def share_rows(breakdowns: dict[str, Breakdown]) -> tuple[list[str], dict[str, list[float]]]:
    """The categories' labels, and per server its shares in percent in that order."""
    labels = {category.name: category.label for category in CATEGORIES} | {OTHER: "other"}
    return ([labels[name] for name in category_names()],
            {server: list(result.shares().values()) for server, result in breakdowns.items()})


def markdown_table(breakdowns: dict[str, Breakdown]) -> str:
    """One row per server, one column per category, shares in percent."""
    labels, rows = share_rows(breakdowns)
    header = "| server | " + " | ".join(labels) + " |"
    rule = "|---" + "|---:" * len(labels) + "|"
    lines = [f"| {server} | " + " | ".join(f"{share:.1f}%" for share in shares) + " |"
             for server, shares in rows.items()]
    return "\n".join([header, rule, *lines]) + "\n"


def plot_breakdown(breakdowns: dict[str, Breakdown], out_png: Path) -> Path:
    """A stacked bar per server: the share of samples in each category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {category.name: category.label for category in CATEGORIES} | {OTHER: "other"}
    servers = list(breakdowns)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(servers) + 3), 4.5))
    bottoms = [0.0] * len(servers)
    for name in category_names():
        shares = [breakdowns[server].shares()[name] for server in servers]
        axes.bar(servers, shares, bottom=bottoms, label=labels[name])
        bottoms = [bottom + share for bottom, share in zip(bottoms, shares, strict=False)]
    axes.set_ylabel("share of CPU samples (%)")
    axes.set_ylim(0, 100)
    axes.set_title("Where the server's CPU time goes")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    figure.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=120)
    figure.savefig(out_png.with_suffix(".svg"), metadata={"Date": None})  # the HTML report's
    plt.close(figure)
    return out_png
