"""/proc read once, in bench.procfs: fields, process trees and CPU, against processes started here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bench import procfs


def test_own_stat_fields():
    me = procfs.stat(os.getpid())
    assert (me.pid, me.ppid, me.pgrp, me.session) == (os.getpid(), os.getppid(), os.getpgrp(), os.getsid(0))
    assert me.state == "R" and me.start_ticks > 0
    assert procfs.stat_or_none(2**22 + 12345) is None


def test_a_process_tree_and_its_cpu_include_children_with_odd_names(tmp_path):
    """A child whose command name holds a space and parentheses, burning CPU under a parent process."""
    odd = tmp_path / "od d) (x"
    odd.symlink_to(sys.executable)
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    spawn = f"import subprocess; subprocess.run([{str(odd)!r}, '-c', {burn!r}])"
    parent = subprocess.Popen([sys.executable, "-c", spawn], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while len(tree := procfs.process_tree(parent.pid)) < 2 or sum(procfs.tree_cpu_s(tree)) < 0.25:
            assert time.monotonic() < deadline, tree
            time.sleep(0.05)
        assert tree[0].pid == parent.pid and tree[1].ppid == parent.pid and tree[1].state in "RS"
        assert procfs.peak_rss_kib(tree[1].pid) > 1000
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_host_busy_time_grows():
    before = procfs.host_busy_s()
    end = time.process_time() + 0.1
    while time.process_time() < end:
        pass
    assert procfs.host_busy_s() > before


def test_the_engine_s_cpu_is_found_by_command_name_and_a_process_born_meanwhile_counts_whole(tmp_path):
    """A process called dockerd burns CPU between two samples; its CPU is the engine's delta."""
    fake = tmp_path / "dockerd"
    fake.symlink_to(sys.executable)
    before = procfs.engine_cpu()
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    child = subprocess.Popen([str(fake), "-c", f"{burn}\ntime.sleep(30)"], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while (delta := procfs.engine_cpu_delta(before, procfs.engine_cpu())) < 0.25:
            assert time.monotonic() < deadline, delta
            time.sleep(0.05)
        found = [pid for pid, _ in procfs.engine_cpu() if pid == child.pid]
        assert found == [child.pid] and delta < 5
    finally:
        child.kill()
        child.wait()
