"""Integrity end to end, as root in real namespaces: an injected stall and an injected disturbance flagged and
measured again, resume after SIGKILL, and the faults a sweep survives (wrk killed, the veth deleted, a full disk)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.config import WORKLOADS, SweepConfig
from bench.lifecycle import RunEvents, execute
from bench.network import Namespaces
from bench.results import Record
from bench.runners import ProcessRunner
from bench.sweep import run_sweep
from netns.config import Topology
from netns.topology import TopologyError, down, up
from tests.test_bench import bench, descendants, finish, wait_for_descendant

pytestmark = pytest.mark.usefixtures("topology")  # skips without root


def sweep(config: SweepConfig, topo: Topology = Topology()) -> list[Record]:
    records: list[Record] = []
    run_sweep(config, ProcessRunner(topo, server_cpus=(0,), client_cpu=1), Namespaces(topo), records.append)
    return records


def plaintext(duration_s: int, repeat: int = 1, remeasure: int = 1) -> SweepConfig:
    return SweepConfig("test", ("epoll",), (WORKLOADS["plaintext"],), (8,), duration_s=duration_s, warmup_s=1,
                       repeat=repeat, remeasure=remeasure)


def during_first_run(duration_s: int, act: Callable[[int], None]) -> threading.Thread:
    """Calls act(wrk's pid) once, when the first measured wrk run (not a warm-up: its duration differs) starts."""
    def watch() -> None:
        act(wait_for_descendant(os.getpid(), f"--duration={duration_s}s"))
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_server_stopped_for_3_s_is_flagged_stalled_and_measured_again():
    def stop_server(_wrk: int) -> None:
        server = wait_for_descendant(os.getpid(), "-m servers epoll")
        time.sleep(1)
        os.kill(server, signal.SIGSTOP)
        time.sleep(3)
        os.kill(server, signal.SIGCONT)

    watcher = during_first_run(5, stop_server)
    records = sweep(plaintext(5))
    watcher.join(timeout=10)
    assert [(r.repeat, r.attempt, r.status) for r in records] == [(1, 1, "ok"), (1, 2, "ok")]
    stalled, again = records
    assert "stalled" in stalled.flags and "below 10% of its level for" in stalled.flag_details["stalled"]
    assert stalled.superseded_by == {"repeat": 1, "attempt": 2}
    assert "remeasured" in again.flags and "stalled" not in again.flags and again.superseded_by is None


def test_a_cpu_hog_on_the_server_s_cpu_is_flagged_disturbed_and_measured_again():
    def hog(wrk: int) -> None:
        burner = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])
        try:
            while os.path.exists(f"/proc/{wrk}"):
                time.sleep(0.05)
        finally:
            burner.kill()
            burner.wait()

    watcher = during_first_run(3, hog)
    records = sweep(plaintext(3))
    watcher.join(timeout=10)
    assert [(r.repeat, r.attempt) for r in records] == [(1, 1), (1, 2)]
    hogged, again = records
    assert "disturbed" in hogged.flags and hogged.other_cpu_share >= 0.3, hogged.flag_details
    assert hogged.superseded_by == {"repeat": 1, "attempt": 2} and "remeasured" in again.flags


def test_wrk_killed_mid_point_fails_that_point_and_the_sweep_goes_on():
    watcher = during_first_run(3, lambda wrk: (time.sleep(0.5), os.kill(wrk, signal.SIGKILL)))
    records = sweep(plaintext(3, repeat=2, remeasure=0))
    watcher.join(timeout=10)
    assert [r.status for r in records] == ["failed", "ok"]
    assert "wrk exited with code -9" in records[0].failure


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_resume_after_sigkill_measures_exactly_the_missing_points(tmp_path):
    out = tmp_path / "run"
    killed = bench("--preset", "plaintext", "--servers", "epoll", "--connections", "4", "8", "--duration", "1",
                   "--repeat", "2", "--remeasure", "0", "--out", str(out), start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / "results.json").exists() or len(results(out)["records"]) < 4:
        assert time.monotonic() < deadline and killed.poll() is None, "no points recorded"
        time.sleep(0.1)
    killed.kill()
    finish(killed)
    before = results(out)
    assert before["status"] == "running"  # killed outright: nobody marked it
    code, output = finish(bench("resume", str(out)), timeout=180)
    assert code == 0, output
    after = results(out)
    planned = {(s, "plaintext", c, r) for s in ("epoll", "floor", "nginx") for c in (4, 8) for r in (1, 2)}
    keys = [(r["server"], r["workload"], r["connections"], r["repeat"]) for r in after["records"]]
    assert sorted(keys) == sorted(planned)  # every point, none twice
    assert after["records"][:len(before["records"])] == before["records"]  # the recorded ones untouched
    assert after["status"] == "complete" and (out / "report.md").exists()
    (resumed,) = after["resumed"]
    assert (resumed["forced"], resumed["skipped"]) == (False, len(before["records"]))
    assert 0 < after["efficiency"]["wrk_share"] < 1

    # Another code version: refused with one line, the file untouched; --force goes on and says so.
    other = tmp_path / "other"
    shutil.copytree(out, other)
    document = results(other) | {"status": "interrupted"}
    document["environment"]["git_commit"] = "0000000"
    (other / "results.json").write_text(json.dumps(document))
    saved = (other / "results.json").read_bytes()
    code, output = finish(bench("resume", str(other)))
    assert code == 2 and output.strip().count("\n") == 0, output
    assert "cannot resume" in output and "git_commit was '0000000'" in output, output
    assert (other / "results.json").read_bytes() == saved
    code, output = finish(bench("resume", "--force", str(other)))
    assert code == 0, output
    forced = results(other)
    assert forced["resumed"][-1]["forced"] and len(forced["records"]) == len(after["records"])


def test_the_veth_deleted_mid_sweep_stops_it_with_no_half_record(tmp_path):
    """On a topology of our own (deleting the shared swissknife0 would break everyone's runs)."""
    topo = Topology("sk23-srv", "sk23-cli", "sk23v0", "sk23v1", "fd00:23::1", "fd00:23::2")
    up(topo)
    try:
        runner = ProcessRunner(topo, server_cpus=(0,), client_cpu=1)
        out = tmp_path / "run"

        def delete(_wrk: int) -> None:
            time.sleep(0.5)
            subprocess.run(["ip", "-n", topo.server_ns, "link", "del", topo.server_if], check=True)

        seen: list[Record] = []
        events = RunEvents(lambda run, points: None, seen.append, lambda profile: None)
        watcher = during_first_run(3, delete)
        with pytest.raises(TopologyError, match="sk23v0 not found in sk23-srv"):
            execute(plaintext(3, repeat=2, remeasure=0), runner, out, False, [], events)
        watcher.join(timeout=10)
        document = results(out)
        assert document["status"] == "interrupted" and document["records"] == [] and seen == []
        assert not descendants(os.getpid()), "the server or wrk left running"
    finally:
        down(topo)


def test_a_full_results_disk_stops_the_run_and_keeps_the_last_good_copy(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        out = disk / "run"
        running = bench("--preset", "plaintext", "--servers", "epoll", "--connections", "4", "--duration", "1",
                        "--repeat", "4", "--remeasure", "0", "--out", str(out))
        deadline = time.monotonic() + 120
        while not (out / "results.json").exists() or not results(out)["records"]:
            assert time.monotonic() < deadline and running.poll() is None, "no point recorded"
            time.sleep(0.1)
        subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=4k"], capture_output=True)
        code, output = finish(running)
        assert code == 2 and "cannot save" in output and "last good copy" in output, output
        kept = results(out)  # whole JSON, not a truncated file
        assert kept["records"] and kept["status"] == "running"
        assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temporary file left behind"
    finally:
        subprocess.run(["umount", str(disk)], check=True)
