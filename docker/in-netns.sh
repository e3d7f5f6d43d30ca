#!/usr/bin/env bash
# Run a command inside a named network namespace of the host, without the
# capabilities it took to get there.
#   in-netns.sh NAMESPACE COMMAND [ARGS...]
# The container sees the host's namespaces through the /run/netns bind mount
# (compose.yaml) and joins one with nsenter (needs CAP_SYS_ADMIN). setpriv then
# drops SYS_ADMIN and SYSLOG from the bounding set (and the inheritable set) so
# the command, a server or wrk, runs without them: it can neither leave its
# namespace nor mount anything. `docker exec` (perf, beside a server) still gets
# the container's own set. exec keeps the command as PID 1, so `docker stop`
# signals it and its exit status is the container's.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 NAMESPACE COMMAND [ARGS...]" >&2; exit 2; }
name=$1
shift
if [ ! -e "/run/netns/$name" ]; then
    echo "error: network namespace $name does not exist on the host." >&2
    echo "Create the topology first: sudo python3 netns/setup.py up" >&2
    echo "  (or, without pyroute2 on the host: docker compose run --rm netns up)" >&2
    exit 2
fi
drop=-sys_admin,-syslog
exec nsenter "--net=/run/netns/$name" -- setpriv "--bounding-set=$drop" "--inh-caps=$drop" -- "$@"
