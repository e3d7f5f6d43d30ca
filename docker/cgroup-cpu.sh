#!/usr/bin/env bash
# Run a command and report the CPU its container's cgroup used meanwhile.
#   cgroup-cpu.sh COMMAND [ARGS...]
# The docker runner execs wrk through this in the sweep's long-lived wrk
# container: the cgroup's counters read just before and just after wrk give
# wrk's CPU. The last line on stderr is
#   swissknife-cgroup-cpu USER_NS SYSTEM_NS
# and the exit status is the command's. The counters are read with shell
# builtins (no process of their own) from cgroup v2's cpu.stat or v1's cpuacct.
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

counters() {  # sets user_ns and system_ns
    local key value
    if [ -r /sys/fs/cgroup/cpu.stat ]; then
        while read -r key value; do
            case $key in
                user_usec) user_ns=$((value * 1000)) ;;
                system_usec) system_ns=$((value * 1000)) ;;
            esac
        done </sys/fs/cgroup/cpu.stat
    else
        read -r user_ns </sys/fs/cgroup/cpuacct/cpuacct.usage_user
        read -r system_ns </sys/fs/cgroup/cpuacct/cpuacct.usage_sys
    fi
}

counters
user_before=$user_ns system_before=$system_ns
"$@"
status=$?
counters
echo "swissknife-cgroup-cpu $((user_ns - user_before)) $((system_ns - system_before))" >&2
exit "$status"
