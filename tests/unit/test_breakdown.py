"""Where the time goes: a sample counts in the category of its leaf-most frame that matches one (pure)."""

from __future__ import annotations

from bench.profiling.breakdown import OTHER, classify


def test_classification_rule() -> None:
    select_poll = "python3;py::serve:/s/servers/base.py;select_select;__select;do_select;sock_poll;tcp_poll"
    send = "python3;py::send:/s/servers/base.py;sock_sendall;__send;__sys_sendto;tcp_sendmsg;finish_task_switch"
    gil = "python3;_PyEval_EvalFrameDefault;PyEval_RestoreThread;take_gil;pthread_cond_timedwait@@GLIBC_2.3.2"
    handler = "python3;py::route:/s/servers/http.py;_PyEval_EvalFrameDefault;lookdict_unicode"
    assert [classify(stack) for stack in (select_poll, send, gil, handler, "python3;[unknown]")] == [
        "multiplexing", "network", "locks", "python", OTHER]
