"""A point's server: started, verified, holding the workload's idle connections, stopped again."""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass, field

from bench import holder, procfs, subjects, verify
from bench.config import Point, SweepConfig, Workload
from bench.errors import BenchError, PointFailed, PointUnsupported
from bench.holder import PER_ADDRESS, PER_HOLDER, IdleConnections, accept_queue, addresses_needed, established_at
from bench.limits import open_file_limit, server_workers
from bench.network import Namespaces, Network
from bench.runners import Runner
from netns.config import Topology
from netns.topology import add_client_addresses, remove_client_addresses
from servers.base import UNSUPPORTED_EXIT

IDLE_SETTLE_S = 10.0  # for the server to accept the idle connections the holders have opened ...
IDLE_SETTLE_PER_S = 10_000  # ... plus a second per this many of them


@dataclass
class Idle:
    """The idle connections of a session, and what opening them cost."""

    topo: Topology
    extra_addresses: int  # added to the client for this session, removed with it
    connections: IdleConnections | None = None
    figures: dict[str, float | int | None] = field(default_factory=dict)  # Record fields (idle_*)

    def close(self) -> None:
        try:
            if self.connections is not None:
                self.connections.close()
        finally:
            if self.extra_addresses:
                remove_client_addresses(self.topo)


class ServerSession:
    """The point's server started, verified, and holding the workload's idle connections; stopped on exit.

    `start()` raises PointFailed for anything that goes wrong on the way (the server not answering or
    answering wrongly, a holder or `ss` failing), with the server stopped again: one point fails, the
    sweep goes on. Only BenchError (the sweep cannot run at all) and interrupts pass through.
    """

    def __init__(self, runner: Runner, net: Network, config: SweepConfig, point: Point,
                 profiled: bool = False) -> None:
        self.runner, self.net, self.config, self.point, self.profiled = runner, net, config, point, profiled
        self.port = 0
        self.idle: Idle | None = None

    def __enter__(self) -> ServerSession:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self.port = start_verified(self.runner, self.net, self.config, self.point, self.profiled)
            if self.point.workload.idle:
                self.idle = hold_idle(self.runner, self.net, self.port, self.point.workload.idle)
        except (PointFailed, BenchError):
            self.stop()
            raise
        except Exception as error:
            self.stop()
            raise PointFailed(with_server_log(self.runner, f"server start failed: {error}")) from error

    @property
    def alive(self) -> bool:
        return self.runner.server_exit_code() is None

    def close_idle(self) -> None:
        if self.idle is not None:
            idle, self.idle = self.idle, None
            idle.close()

    def stop(self) -> None:
        self.close_idle()
        self.runner.stop_server()


def hold_idle(runner: Runner, net: Network, port: int, count: int, per_holder: int = PER_HOLDER,
              per_address: int = PER_ADDRESS) -> Idle:
    """Open `count` idle connections from the client namespace (as many holders and source addresses as
    the limits need), wait until the server has accepted them, and measure what they cost."""
    if not isinstance(net, Namespaces):
        raise PointFailed("idle connections are held from the client namespace of the one-host topology")
    topo = net.topo
    extra = addresses_needed(count, per_address) - 1
    server_before, kernel_before = runner.server_usage().rss_kib, procfs.kernel_socket_kib()
    started = time.monotonic()
    idle = Idle(topo, extra)
    try:
        sources = [topo.client_addr, *(add_client_addresses(topo, extra) if extra else [])]
        idle.connections = IdleConnections(topo.client_ns, topo.server_addr, port, count, sources, topo.server_ns,
                                           per_holder, per_address)
        report = idle.connections.open()
        # The server side lags by its accept loop: give it a bounded moment to take them all, unless it
        # has stopped taking any.
        deadline = time.monotonic() + IDLE_SETTLE_S + count / IDLE_SETTLE_PER_S
        last, last_change = None, time.monotonic()
        while time.monotonic() < deadline:
            on_server, queued = seen = established_at(topo.server_ns, port), accept_queue(topo.server_ns, port)
            if on_server >= report.held and not queued:
                break
            if seen != last:
                last, last_change = seen, time.monotonic()
            elif queued and time.monotonic() - last_change >= holder.ACCEPT_STALL_S:
                # What the model does with idle connections (blocking waits on the first one for ever), measured:
                # the point cannot be served, as when a server runs out of descriptors.
                raise PointUnsupported(f"the server stopped accepting: {queued:,} of {count:,} idle connections "
                                       f"waited in its accept queue, none taken for {holder.ACCEPT_STALL_S:g} s")
            time.sleep(0.2)
        opened_s = time.monotonic() - started
        server_after, kernel_after = runner.server_usage().rss_kib, procfs.kernel_socket_kib()
    except BaseException:
        idle.close()
        raise

    def per_connection(kib: int) -> float | None:
        return kib / report.held if report.held else None

    idle.figures = {
        "idle_held": report.held, "idle_on_server": on_server, "idle_open_s": opened_s,
        "idle_holders": len(idle.connections.chunks), "idle_sources": extra + 1,
        "idle_server_rss_before_kib": server_before, "idle_server_rss_kib": server_after,
        "idle_server_kib_per_connection": per_connection(server_after - server_before),
        "idle_holder_kib_per_connection": per_connection(report.rss_kib - report.rss_kib_before),
        "idle_kernel_kib_per_connection": per_connection(kernel_after - kernel_before),
    }
    return idle


def start_verified(runner: Runner, net: Network, config: SweepConfig, point: Point,
                   profiled: bool = False) -> int:
    """Start the point's server and check its answers; its port, or PointFailed saying why it is unusable."""
    port = net.free_port()
    runner.start_server(point.server, net.server_addr, port, profiled, server_workers(point, open_file_limit()))
    problem = verify.wait_until_answering(net, port, runner.server_exit_code, config.ready_timeout_s)
    if problem is None:
        try:
            if found := verify.problems(net, port, point.workload):
                problem = "verification failed: " + "; ".join(found)
        except (OSError, http.client.HTTPException) as error:
            problem = f"verification failed: {error!r}"
    if problem is not None:
        if runner.server_exit_code() == UNSUPPORTED_EXIT:  # the server's last line says why
            raise PointUnsupported((runner.server_log().splitlines() or [problem])[-1].removeprefix("servers: "))
        raise PointFailed(with_server_log(runner, problem))
    return port


# A path per route for the verify gate of a user's subject: small, quick answers.
ROUTE_PATHS = {"/": "/", "/bytes/N": "/bytes/1024", "/sleep/MS": "/sleep/1", "/cpu/US": "/cpu/100"}


def check_subject(runner: Runner, net: Network, config: SweepConfig, subject: subjects.Subject) -> None:
    """The gate before a run for a subject from a user's file: it starts and answers every route it declares
    right, else BenchError with one line naming the step (no run directory is made)."""
    point = Point(subject.name, Workload("verify", "/"), 1, 0)
    try:
        with ServerSession(runner, net, config, point) as session:
            for route in subject.routes:
                if found := verify.problems(net, session.port, Workload("verify", ROUTE_PATHS[route])):
                    raise PointFailed(f"route {route}: " + "; ".join(found))
    except (PointFailed, OSError, http.client.HTTPException) as failure:
        raise BenchError(f"subject {subject.name} ({subject.directory}): {failure}") from None


def with_server_log(runner: Runner, reason: str) -> str:
    log = " | ".join(runner.server_log().splitlines()[-3:])
    return f"{reason} (server output: {log})" if log else reason


