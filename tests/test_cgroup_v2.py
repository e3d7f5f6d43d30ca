"""docker/cgroup-cpu.sh (wrk's CPU in the docker runner) on cgroup v2, on a host that mounts only v1 (as root).

A cgroup2 filesystem mounts in a private mount namespace on any kernel since 4.5, even where every
controller is bound to v1: cpu.stat's usage_usec, user_usec and system_usec are the cgroup core's, not the
cpu controller's. The script then runs as it does in a container on a v2 host: in a cgroup namespace whose
root is a child cgroup of ours, with cgroup2 mounted on /sys/fs/cgroup, measuring a process that burns a
known amount of CPU, against that process's own /proc figures.

Not run here: a container that a Docker engine put in a v2 cgroup (its cgroupns, the systemd driver) and a
cpu.stat with the cpu controller enabled (nr_periods, throttled_usec, ...). The parser reads recorded trees
of that shape instead, mounted where the script looks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CGROUP_CPU = ROOT / "docker" / "cgroup-cpu.sh"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount and cgroup namespaces need root")

# Run "$@" in a fresh child cgroup of a cgroup2 hierarchy, in a cgroup namespace rooted there, with that
# cgroup2 on /sys/fs/cgroup: a container's view on a v2 host. The child is removed afterwards.
IN_V2_CGROUP = r"""
set -euo pipefail
hierarchy=$(mktemp -d)
mount -t cgroup2 none "$hierarchy"
child=$hierarchy/swissknife-test-$$
mkdir "$child"
status=0
( echo "$BASHPID" >"$child/cgroup.procs"
  exec unshare --cgroup bash -c 'mount -t cgroup2 none /sys/fs/cgroup && exec "$@"' _ "$@" ) || status=$?
rmdir "$child"
umount "$hierarchy"
rmdir "$hierarchy"
exit "$status"
"""
BURN_S = 1.0
# Burns BURN_S of CPU, mostly in user space or mostly in the kernel (reads of /dev/zero: the kernel
# zeroes the buffer), then prints its utime and stime from /proc in seconds.
BURN = rf"""
import os, sys, time
kernel = sys.argv[1] == "system"
with open("/dev/zero", "rb", buffering=0) as zero:
    while time.process_time() < {BURN_S}:
        zero.read(1 << 20) if kernel else sum(range(20000))
fields = open("/proc/self/stat").read().rpartition(")")[2].split()
ticks = os.sysconf("SC_CLK_TCK")
print(int(fields[11]) / ticks, int(fields[12]) / ticks)
"""


def in_v2_cgroup(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", IN_V2_CGROUP, "_",
                           *command], capture_output=True, text=True, timeout=60)


def cgroup_cpu_line(stderr: str) -> tuple[float, float]:
    """User and system seconds from the script's last line on stderr."""
    tag, user_ns, system_ns = stderr.strip().splitlines()[-1].split()
    assert tag == "swissknife-cgroup-cpu", stderr
    return int(user_ns) / 1e9, int(system_ns) / 1e9


@pytest.fixture(scope="module")
def v2() -> None:
    seen = in_v2_cgroup("cat", "/proc/self/cgroup", "/sys/fs/cgroup/cpu.stat")
    if seen.returncode != 0:
        pytest.skip(f"no cgroup2 in a private mount namespace here: {seen.stderr.strip()[-300:]}")
    # The namespace's root, as in a container: v2's line is "0::/", and its cpu.stat has the core's keys.
    assert "\n0::/\n" in f"\n{seen.stdout}", seen.stdout
    assert {"usage_usec", "user_usec", "system_usec"} <= {line.split()[0] for line in seen.stdout.splitlines()}


@pytest.mark.parametrize("mostly", ["user", "system"])
def test_the_v2_path_reads_a_real_v2_cgroup_within_5_percent_of_proc(v2, mostly):
    # sys.executable, not a `python3` on PATH: a pyenv shim would burn its own CPU in the cgroup first.
    done = in_v2_cgroup(str(CGROUP_CPU), sys.executable, "-c", BURN, mostly)
    assert done.returncode == 0, done.stderr
    proc_user, proc_system = map(float, done.stdout.split())
    user, system = cgroup_cpu_line(done.stderr)
    proc_total = proc_user + proc_system
    assert abs(proc_total - BURN_S) < 0.05 * BURN_S, done.stdout  # it burned what it was told to
    assert abs(user + system - proc_total) < 0.05 * proc_total, (user, system, done.stdout)
    # Each half lands where the process spent it (both sides split a precise total by ticks).
    assert abs(user - proc_user) < 0.05 * proc_total and abs(system - proc_system) < 0.05 * proc_total, (
        user, system, done.stdout)
    assert (user if mostly == "user" else system) > 0.7 * proc_total


# cpu.stat of a v2 cgroup with the cpu controller enabled (kernel 6.x: the core's keys first, then the
# controller's), and v1's cpuacct files: before and after, with counters past 2^32 µs to check the
# script's arithmetic.
V2_BEFORE = """usage_usec 5000000123
user_usec 4000000100
system_usec 1000000023
nice_usec 0
core_sched.force_idle_usec 0
nr_periods 812
nr_throttled 3
throttled_usec 91234
nr_bursts 0
burst_usec 0
"""
V2_AFTER = V2_BEFORE.replace("5000000123", "5001500123").replace("4000000100", "4001250100").replace(
    "1000000023", "1000250023").replace("nr_periods 812", "nr_periods 830")
RECORDED = {
    "v2": ({"cpu.stat": V2_BEFORE}, {"cpu.stat": V2_AFTER}, (1_250_000_000, 250_000_000)),
    "v1": ({"cpuacct/cpuacct.usage_user": "7000000000123\n", "cpuacct/cpuacct.usage_sys": "9000000000\n"},
           {"cpuacct/cpuacct.usage_user": "7000900000123\n", "cpuacct/cpuacct.usage_sys": "9100000000\n"},
           (900_000_000, 100_000_000)),
}


@pytest.mark.parametrize("version", RECORDED)
def test_the_parser_reads_recorded_trees_of_both_versions(tmp_path, version):
    """The recorded tree on /sys/fs/cgroup (a private mount namespace); the command between the script's
    two reads swaps in the later counters, so the delta it reports is exactly theirs."""
    before, after, (user_ns, system_ns) = RECORDED[version]
    tree, later = tmp_path / "tree", tmp_path / "later"
    for root, files in ((tree, before), (later, after)):
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c",
         'mount --bind "$1" /sys/fs/cgroup && exec "$2" cp -rT "$3" /sys/fs/cgroup', "_",
         str(tree), str(CGROUP_CPU), str(later)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"swissknife-cgroup-cpu {user_ns} {system_ns}"
