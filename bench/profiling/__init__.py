"""Profiling the servers: perf flame graphs with Python and kernel frames, and where the time goes.

    support = python_perf_args("python3")           # start the server with support.args
    result = profile_server(pids, 5, out_dir, "epoll", support)   # while wrk runs
    table = markdown_table({"epoll": breakdown(result.folded), ...})

Nothing here raises when perf cannot run: results carry a status and one line
saying what to change, so a sweep completes without profiles.
"""

from bench.profiling.breakdown import (
    CATEGORIES,
    OTHER,
    Breakdown,
    Category,
    breakdown,
    classify,
    markdown_table,
    plot_breakdown,
    share_rows,
)
from bench.profiling.flamegraph import diff_folded, differential, read_folded, render_folded
from bench.profiling.perf import (
    ProfileResult,
    PythonSupport,
    SyscallCount,
    count_syscalls,
    perf_problem,
    profile_server,
    python_perf_args,
    remove_interpreter_files,
)

__all__ = [
    "CATEGORIES", "OTHER", "Breakdown", "Category", "ProfileResult", "PythonSupport", "SyscallCount",
    "breakdown", "classify", "count_syscalls", "diff_folded", "differential", "markdown_table", "perf_problem",
    "plot_breakdown", "profile_server", "python_perf_args", "read_folded", "remove_interpreter_files",
    "render_folded", "share_rows",
]
