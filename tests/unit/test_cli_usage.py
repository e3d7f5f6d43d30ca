"""The command line's usage errors: wrong names and CPU sets are refused before anything runs (no root needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str) -> tuple[int, str]:
    """The command line as a user runs it: a process, its exit status and what it printed."""
    done = subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    return done.returncode, done.stdout + done.stderr


def bench_here(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """The same in this process (faster): argparse's usage errors end in SystemExit(2)."""
    from bench.cli import main
    try:
        code = main(list(args))
    except SystemExit as stop:
        code = stop.code
    printed = capsys.readouterr()
    return code, printed.out + printed.err


def test_unknown_names_are_usage_errors_listing_the_valid_ones(capsys):
    code, output = bench("--servers", "epoll", "nosuch")
    assert code == 2 and "unknown server(s) nosuch" in output and "epoll-pool" in output and "nginx" in output
    code, output = bench_here(capsys, "--workloads", "nosuch")
    assert code == 2 and "unknown workload(s) nosuch" in output and "pipeline-16" in output
    code, output = bench_here(capsys, "--preset", "nosuch")
    assert code == 2 and "invalid choice: 'nosuch'" in output and "quick" in output


def test_cpus_must_be_usable_and_well_formed(capsys):
    code, output = bench_here(capsys, "--cpus", "0-x,1")
    assert code == 2 and "--cpus takes SERVER,CLIENT CPU numbers (SERVER may be a range A-B)" in output, output
    code, output = bench_here(capsys, "--cpus", "0-4096,1")
    assert code == 2 and "--cpus: usable CPUs are" in output, output


def test_profile_is_still_accepted_as_the_older_spelling_of_preset():
    from bench.cli import resolve, sweep_parser
    parser = sweep_parser()
    for option in ("--preset", "--profile"):
        config = resolve(parser.parse_args([option, "smoke"]), parser)
        assert config.preset == "smoke" and config.servers == ("epoll", "blocking", "floor", "nginx")


def usage_error(capsys, *args: str) -> str:
    """The usage error resolving `args` ends in (in-process: no interpreter start per case)."""
    from bench.cli import resolve, sweep_parser
    parser = sweep_parser()
    with pytest.raises(SystemExit) as exit_:
        resolve(parser.parse_args(list(args)), parser)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_engine_options_go_together_and_are_checked_before_anything_runs(capsys):
    assert "--server-engine, --client-engine and --server-addr go together" in usage_error(
        capsys, "--server-engine", "unix:///x.sock")
    engines = ("--server-engine", "unix:///a.sock", "--client-engine", "unix:///b.sock")
    assert "--server-addr takes an IP address, not 'fd00::zz'" in usage_error(
        capsys, *engines, "--server-addr", "fd00::zz")
    assert "needs --runner docker" in usage_error(
        capsys, *engines, "--server-addr", "fd00:5b::1", "--runner", "process")
    assert "2 client engines share each point's connections evenly: 5 do not divide by 2" in usage_error(
        capsys, *engines, "--client-engine", "unix:///c.sock", "--server-addr", "fd00:5b::1", "--connections", "4", "5")
    output = usage_error(capsys, *engines, "--server-addr", "fd00:5b::1", "--experiments", "idle-connections")
    assert "idle-1000, idle-5000" in output and "do not run with --client-engine" in output


def test_engine_options_resolve_into_the_config():
    from bench.cli import resolve, sweep_parser
    parser = sweep_parser()
    config = resolve(parser.parse_args([
        "--preset", "smoke", "--server-engine", "ctx-a", "--client-engine", "ssh://me@b", "--client-engine",
        "tcp://c:2375", "--server-addr", "192.0.2.1", "--cpus", "0-3,7"]), parser)
    assert (config.runner, config.server_engine, config.client_engines, config.server_addr) == (
        "docker", "ctx-a", ("ssh://me@b", "tcp://c:2375"), "192.0.2.1")
    assert (config.server_cpus, config.client_cpu) == ((0, 1, 2, 3), 7)  # the engines' CPUs, not this host's
    plain = resolve(parser.parse_args(["--preset", "smoke"]), parser)
    assert (plain.runner, plain.server_engine, plain.client_engines, plain.server_addr) == ("process", None, (), None)


def test_urls_and_nginx_take_both_address_families():
    from bench import nginx, wrk
    assert wrk.url("fd00:5a::1", 80, "/") == "http://[fd00:5a::1]:80/"
    assert wrk.url("192.0.2.1", 80, "/x") == "http://192.0.2.1:80/x"
    assert "listen 192.0.2.1:8080 backlog=4096;" in nginx.CONFIG.format(
        directory="/d", address="192.0.2.1:8080", nofile=1, connections=1, workers=1, reuseport="")


def test_paths_are_shown_as_the_host_names_them(monkeypatch):
    """In the compose bench container the results directory is the host's ./results (or BENCH_RESULTS)."""
    from bench.console import HOST_RESULTS_ENV, RESULTS_DIR, shown
    run = RESULTS_DIR / "20260101-000000-quick" / "report.md"
    monkeypatch.delenv(HOST_RESULTS_ENV, raising=False)
    assert shown(run) == str(run)
    monkeypatch.setenv(HOST_RESULTS_ENV, "./results")
    assert shown(run) == "./results/20260101-000000-quick/report.md"
    monkeypatch.setenv(HOST_RESULTS_ENV, "/srv/runs")
    assert shown(run) == "/srv/runs/20260101-000000-quick/report.md"
    assert shown(Path("/tmp/elsewhere")) == "/tmp/elsewhere"  # --out outside the results directory
