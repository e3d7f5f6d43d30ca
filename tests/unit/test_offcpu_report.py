"""The off-CPU part of a profile report: the blocked-time table, the graphs and the hand-offs as Document blocks,
so they reach report.md and report.html alike (pure: a folded file written here, no perf)."""

from __future__ import annotations

from bench.analysis.document import Flames, Table, Text, block_lines
from bench.analysis.report import off_cpu_blocks
from bench.profiling.offcpu import LABELS
from bench.results import ServerProfile


def test_the_off_cpu_blocks_hold_the_blocked_time_by_category_the_graphs_and_the_hand_offs(tmp_path):
    (tmp_path / "flamegraphs").mkdir()
    (tmp_path / "flamegraphs" / "p.offcpu.folded").write_text(
        f"{LABELS['sleep']};py::handler;clock_nanosleep 3000000000\n"
        f"{LABELS['condition']};py::_worker;futex_wait 1000000000\n")
    (tmp_path / "flamegraphs" / "p.offcpu.svg").write_text('<svg height="321"></svg>')
    profile = ServerProfile("epoll-pool", "sleep-5", 64, "ok", "", "perf_jit",
                            offcpu_svg="flamegraphs/p.offcpu.svg", offcpu_folded="flamegraphs/p.offcpu.folded",
                            handoff_us={"count": 10, "mean": 12.0, "p50": 8.0, "p99": 40.0})
    blocks = off_cpu_blocks([profile], tmp_path)
    table = next(b for b in blocks if isinstance(b, Table))
    row = {column: entry.text for column, entry in zip(table.columns, table.rows[0], strict=True)}
    assert row["server"] == "epoll-pool" and row["blocked (thread-s)"] == "4.00"
    assert row[LABELS["sleep"]] == "75.0%" and row[LABELS["condition"]] == "25.0%"
    flames = next(b for b in blocks if isinstance(b, Flames))
    assert [(f.label, f.path, f.height) for f in flames.graphs] == [
        ("epoll-pool off-CPU", "flamegraphs/p.offcpu.svg", 321)]
    text = "\n".join(line for b in blocks if isinstance(b, Text) for line in block_lines(b))
    assert "epoll-pool 12 µs mean, 8 µs median, 40 µs p99 (10 hand-offs)" in text


def test_a_run_without_off_cpu_profiles_has_no_off_cpu_blocks(tmp_path):
    assert off_cpu_blocks([ServerProfile("epoll", "plaintext", 64, "ok", "", "none")], tmp_path) == []


def test_a_lock_stack_names_its_python_function_and_the_c_frames_down_to_the_lock(tmp_path):
    from bench.profiling.breakdown import heaviest_lock_path, lock_path

    stack = ("python3;[unknown];_PyEval_EvalFrameDefault;py::route:/opt/swissknife/servers/http.py;"
             "_PyEval_EvalFrameDefault;method_vectorcall_FASTCALL;dict_get;_PyCriticalSection_BeginSlow;"
             "PyMutex_Lock;__sched_yield;entry_SYSCALL_64")
    assert lock_path(stack) == ("py::route:/opt/swissknife/servers/http.py → method_vectorcall_FASTCALL → dict_get"
                                " → _PyCriticalSection_BeginSlow → PyMutex_Lock → __sched_yield")
    assert lock_path("python3;py::serve;sock_recv;tcp_recvmsg") is None
    folded = tmp_path / "x.folded"
    folded.write_text(f"{stack} 3\npython3;py::serve;sock_recv;tcp_recvmsg 1\n")
    path, share = heaviest_lock_path(folded)
    assert path.startswith("py::route") and share == 75.0
