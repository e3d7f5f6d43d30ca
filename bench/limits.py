"""What the host lets one server have, and which points a server cannot serve here or by its description
(recorded unsupported, never run)."""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass

from bench import procfs, subjects
from bench.config import Point, SweepConfig, estimated_s

SERVER_SPARE_FDS = 8  # stdio, the listener, the poller: descriptors a server holds besides connections
# A worker is planned for this share of its open-file limit at most: the kernel spreads connections
# over SO_REUSEPORT listeners by a hash, not evenly.
WORKER_FILL = 0.8
THREAD_HEADROOM = 2_000  # tasks left to the rest of the machine when a model wants a thread per connection


@dataclass(frozen=True)
class HostLimits:
    """What the host lets one server have: past these, a point is unsupported, not failed."""

    open_files: int  # per process: the RLIMIT_NOFILE every server inherits from bench
    threads: int  # threads one model may start (the kernel's limit less THREAD_HEADROOM)
    threads_because: str  # the kernel setting that sets it


def open_file_limit() -> int:
    """The open-file limit the servers inherit (bench raised its soft limit to the hard one at start)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def host_limits() -> HostLimits:
    threads, because = procfs.thread_limit()
    return HostLimits(open_file_limit(), threads - THREAD_HEADROOM, because)


def estimated_wall_s(config: SweepConfig) -> float:
    """The sweep's wall time on this host, from its plan (config.estimated_s) less the points it cannot run."""
    limits = host_limits()
    return estimated_s(config, lambda point: unsupported(point, limits) is None)


def unsupported(point: Point, limits: HostLimits) -> str | None:
    """Why the point's server cannot serve it, by its description or on this host (reported as such, never
    run), else None."""
    subject = subjects.get(point.server)
    if missing := [route for route in point.workload.routes if not subject.serves(route)]:  # a mix's every route
        return f"{subject.name} serves only {', '.join(subject.routes)} ({subject.model}), not {', '.join(missing)}"
    if subject.keep_alive_only and point.workload.close:
        return f"{subject.name} answers only kept-alive connections ({subject.model}), not `Connection: close`"
    connections = point.workload.idle + point.connections
    need = f"{point.workload.idle:,} idle + {point.connections} active connections need"
    descriptors = connections + SERVER_SPARE_FDS
    if (fd_setsize := subject.limits.fd_setsize) is not None and descriptors > fd_setsize:
        return (f"{subject.name} watches descriptors below FD_SETSIZE ({fd_setsize}) only; "
                f"{need} about {descriptors:,}")
    reasons = []
    if subject.limits.processes == "one" and descriptors > limits.open_files:
        spread = [s.name for s in subjects.REGISTRY.subjects.values() if s.limits.processes == "workers"]
        reasons.append(f"one process may open {limits.open_files:,} files on this host (its RLIMIT_NOFILE, "
                       f"raised to the hard limit) and {need} about {descriptors:,}; only the multi-process "
                       f"servers ({', '.join(spread)}) spread them over more processes")
    if subject.limits.thread_per_connection and connections > limits.threads:
        reasons.append(f"a thread per connection: {connections:,} threads, and this kernel allows about "
                       f"{limits.threads:,} to one process ({limits.threads_because}, less {THREAD_HEADROOM:,} "
                       f"for the rest of the machine)")
    return "; ".join(reasons) or None


def server_workers(point: Point, open_files: int) -> int | None:
    """Processes a multi-process server needs for the point's connections to fit under each one's
    open-file limit; None: its default (one nginx worker, a reuseport worker per CPU) will do."""
    if subjects.get(point.server).limits.processes != "workers":
        return None
    per_worker = int((open_files - SERVER_SPARE_FDS) * WORKER_FILL)
    needed = math.ceil((point.workload.idle + point.connections) / per_worker)
    return needed if needed > 1 else None


