"""One point's record from its raw figures (to_record), the plan, unsupported points, wrk's report (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import nginx, wrk
from bench.config import WORKLOADS, SweepConfig, plan, workload
from bench.limits import HostLimits, server_workers, unsupported
from bench.records import ClientRun, to_record
from bench.runners.base import ServerUsage, server_command

LIMITS = HostLimits(open_files=20_000, threads=30_000, threads_because="kernel.pid_max = 32,768")

REPORT = wrk.WrkReport(requests=20_000, duration_us=2_000_000, bytes=3_000_000,
                       errors={"connect": 0, "read": 1, "write": 0, "status": 0, "timeout": 2},
                       latency_us={"mean": 300.0, "stdev": 50.0, "max": 9000.0, "p50": 250.0, "p75": 300.0,
                                   "p90": 400.0, "p99": 1200.0, "p99_9": 5000.0})
BEFORE = ServerUsage(cpu_user_s=10.0, cpu_sys_s=5.0, peak_rss_kib=20_000, processes=1, rss_kib=19_000)
VETH = {"rx_bytes": 1_000_000, "tx_bytes": 3_500_000, "rx_packets": 20_000, "tx_packets": 20_000}


POINT = plan(SweepConfig("test", ("epoll",), (WORKLOADS["plaintext"],), (32,), 2, 1, 1))[0]


def record(after: ServerUsage, client_cpu_s: float, host_busy_s: float, server_cpus: int = 1, veth=VETH,
           engine_cpu_s: float = 0.0):
    return to_record(POINT, "now", [ClientRun(None, client_cpu_s, REPORT, host_busy_s, engine_cpu_s)], BEFORE,
                     after, veth, server_cpus)


def test_every_metric_is_derived_from_the_raw_figures():
    r = record(ServerUsage(10.6, 5.4, 25_000, 1, 1), client_cpu_s=1.0, host_busy_s=2.1)
    assert (r.status, r.requests, r.requests_per_s, r.bytes) == ("ok", 20_000, 10_000, 3_000_000)
    assert r.cpu_us_per_request == pytest.approx(50.0) and r.cpu_user_us_per_request == pytest.approx(30.0)
    assert r.cpu_sys_us_per_request == pytest.approx(20.0)
    assert r.server_cpu_share == pytest.approx(0.5) and r.client_cpu_share == pytest.approx(0.5)
    assert r.other_cpu_share == pytest.approx(0.05) and not r.disturbed
    assert (r.errors_read, r.errors_timeout, r.wrk_errors) == (1, 2, 3)
    assert (r.latency_p50_us, r.latency_p99_9_us, r.server_peak_rss_kib) == (250.0, 5000.0, 25_000)
    assert r.veth_consistent and r.veth_tx_per_wrk_byte == pytest.approx(3.5 / 3)
    assert not r.client_bound


def test_client_bound_when_wrk_saturates_its_core_and_the_server_does_not():
    assert record(ServerUsage(10.6, 5.4, 1, 1, 1), client_cpu_s=1.9, host_busy_s=3.0).client_bound
    # both saturated: the server set the pace too
    assert not record(ServerUsage(11.0, 6.0, 1, 1, 1), client_cpu_s=1.9, host_busy_s=3.9).client_bound


def test_shares_are_per_pinned_cpu_and_other_load_marks_the_point_disturbed():
    r = record(ServerUsage(11.0, 6.0, 1, 2, 1), client_cpu_s=1.0, host_busy_s=3.4, server_cpus=2)
    assert r.server_cpu_share == pytest.approx(0.5)
    assert r.other_cpu_share == pytest.approx(0.2) and r.disturbed


def test_the_engine_s_cpu_is_its_own_figure_and_not_other_load():
    """2.1 CPU-s busy: 1.0 server, 1.0 wrk, 0.3 the container engine running wrk's exec: not disturbed."""
    r = record(ServerUsage(10.6, 5.4, 1, 1, 1), client_cpu_s=1.0, host_busy_s=2.4, engine_cpu_s=0.3)
    assert r.engine_cpu_share == pytest.approx(0.15) and r.other_cpu_share == pytest.approx(0.05)
    assert not r.disturbed
    # the same load without the engine's share: disturbed
    assert record(ServerUsage(10.6, 5.4, 1, 1, 1), client_cpu_s=1.0, host_busy_s=2.4).disturbed
    assert record(ServerUsage(10.6, 5.4, 1, 1, 1), client_cpu_s=1.0, host_busy_s=2.0).engine_cpu_share == 0


def test_fewer_bytes_on_the_veth_than_wrk_read_is_inconsistent():
    r = record(ServerUsage(10.6, 5.4, 1, 1, 1), 1.0, 2.1, veth=VETH | {"tx_bytes": 100})
    assert not r.veth_consistent


def test_several_clients_count_as_one_merged_run_and_each_keeps_its_own_figures():
    data = Path(__file__).with_name("data") / "wrk"
    reports = [wrk.parse((data / f"epoll-c{c}.out").read_text()) for c in (8, 64)]
    clients = [ClientRun("unix:///a.sock", 0.4, reports[0]), ClientRun("ssh://b", 1.95, reports[1])]
    # Other machines: no host load, no interface counters.
    r = to_record(POINT, "now", clients, BEFORE, ServerUsage(10.6, 5.4, 1, 1, 1), None, 1)
    merged = wrk.merge(reports)
    assert (r.requests, r.bytes, r.latency_p99_us) == (merged.requests, merged.bytes, merged.latency_us["p99"])
    assert r.requests == 10440 + 71552 and r.client_cpu_s == pytest.approx(2.35)
    assert [(c["engine"], c["requests"], c["latency_p99_us"], c["client_bound"]) for c in r.clients] == [
        ("unix:///a.sock", 10440, 7980.0, False), ("ssh://b", 71552, 8931.0, True)]
    assert r.client_bound  # one wrk's core set the pace
    assert r.other_cpu_share is None and not r.disturbed
    assert (r.veth_tx_bytes, r.veth_consistent, r.veth_tx_per_wrk_byte) == (None, None, None)
    assert record(ServerUsage(10.6, 5.4, 1, 1, 1), 1.0, 2.1).clients is None  # one wrk: its figures are the record's


def test_plan_runs_the_repeats_outermost_one_server_at_a_time_and_idle_workloads_use_their_fixed_active_set():
    config = SweepConfig("test", ("epoll", "nginx"), (WORKLOADS["plaintext"], workload("idle-50")), (4, 8), 1, 1, 2)
    points = [(p.server, p.workload.name, p.connections, p.repeat) for p in plan(config)]
    first_pass = [("epoll", "plaintext", 4, 1), ("epoll", "plaintext", 8, 1), ("nginx", "plaintext", 4, 1),
                  ("nginx", "plaintext", 8, 1), ("epoll", "idle-50", 32, 1), ("nginx", "idle-50", 32, 1)]
    assert points == first_pass + [(*point[:3], 2) for point in first_pass]
    assert workload("idle-x") is None and workload("nosuch") is None


def test_points_a_model_cannot_serve_say_why():
    config = SweepConfig("test", ("select", "nginx", "epoll"), (WORKLOADS["sleep-5"], workload("idle-2000")),
                         (16,), 1, 1, 1)
    reasons = {(p.server, p.workload.name): unsupported(p, LIMITS) for p in plan(config)}
    assert "nginx serves only /, /bytes/N" in reasons["nginx", "sleep-5"]
    assert reasons["nginx", "sleep-5"].endswith("not /sleep/MS")
    assert "FD_SETSIZE (1024)" in reasons["select", "idle-2000"]
    assert reasons["select", "sleep-5"] is None and reasons["epoll", "idle-2000"] is None


def idle_reasons(count: int, limits: HostLimits = LIMITS) -> dict[str, str | None]:
    servers = ("select", "epoll", "threaded", "asyncio", "reuseport", "nginx")
    config = SweepConfig("test", servers, (workload(f"idle-{count}"),), (16,), 1, 1, 1)
    return {p.server: unsupported(p, limits) for p in plan(config)}


def test_one_process_stops_at_its_open_file_limit_and_the_multi_process_models_go_on():
    assert set(idle_reasons(19_000).values()) - {idle_reasons(19_000)["select"]} == {None}
    reasons = idle_reasons(100_000)
    for server in ("epoll", "threaded", "asyncio"):
        assert "one process may open 20,000 files" in reasons[server], reasons[server]
        assert "100,000 idle + 32 active connections need about 100,040" in reasons[server]
    assert "FD_SETSIZE" in reasons["select"] and "open files" not in reasons["select"]
    assert reasons["reuseport"] is None and reasons["nginx"] is None


def test_a_thread_per_connection_stops_at_the_kernel_s_thread_limit_too():
    few_threads = HostLimits(open_files=1_000_000, threads=8_000, threads_because="vm.max_map_count / 2 = 10,000")
    reasons = idle_reasons(10_000, few_threads)
    assert "10,032 threads" in reasons["threaded"] and "vm.max_map_count / 2 = 10,000" in reasons["threaded"]
    assert reasons["epoll"] is None and reasons["asyncio"] is None
    both = idle_reasons(50_000)["threaded"]
    assert "20,000 files" in both and "50,032 threads" in both


def test_multi_process_servers_get_as_many_workers_as_the_connections_need():
    def workers(server: str, count: int, open_files: int = 20_000) -> int | None:
        config = SweepConfig("test", (server,), (workload(f"idle-{count}"),), (16,), 1, 1, 1)
        return server_workers(plan(config)[0], open_files)

    assert workers("reuseport", 0) is None and workers("nginx", 10_000) is None  # their defaults
    assert workers("reuseport", 100_000) == workers("nginx", 100_000) == 7  # 15,993 each at most
    assert workers("nginx", 50_000) == 4 and workers("epoll", 100_000) is None
    assert workers("reuseport", 100_000, open_files=1_000_000) is None
    assert server_command("reuseport", "::1", 80, None, "python3", (), 7)[-2:] == ["--workers", "7"]
    assert "--workers" not in server_command("epoll", "::1", 80, None, "python3")
    # The servers' timeouts (nginx's defaults: 60 s, 75 s) outlast a sweep's group of points, idle ones included.
    epoll = server_command("epoll", "::1", 80, None, "python3")
    assert epoll[epoll.index("--header-timeout") + 1] == epoll[epoll.index("--idle-timeout") + 1] == "3600"


def test_nginx_gets_a_listener_per_worker_when_it_has_several(tmp_path):
    for workers, listen in ((1, "listen [::1]:80 backlog=4096;"), (7, "listen [::1]:80 backlog=4096 reuseport;")):
        directory = tmp_path / str(workers)
        directory.mkdir()
        command = nginx.prepare(directory, "::1", 80, 20_000, workers)
        config = (directory / "nginx.conf").read_text()
        assert f"worker_processes {workers};" in config and listen in config, config
        assert "client_header_timeout 1h;" in config and command[-1] == str(directory / "nginx.conf")


def test_wrk_command_is_bounded_and_the_report_line_is_found_after_wrk_s_summary():
    args = wrk.command(wrk.url("fd00:5a::1", 8080, "/"), WORKLOADS["pipeline-16"], 4, 2, 1, 2)
    assert "--duration=2s" in args and "--timeout=2s" in args and args[-3:] == ["--", "16", "keep-alive"]
    assert "http://[fd00:5a::1]:8080/" in args
    line = json.dumps({"requests": 20_000, "duration_us": 2_000_000, "bytes": 3_000_000, "errors": REPORT.errors,
                       "latency_us": REPORT.latency_us})
    assert wrk.parse(f"Running 2s test\n  1 threads\n{line}\n") == REPORT
    with pytest.raises(ValueError, match="no JSON report"):
        wrk.parse("wrk: connection refused\n")
