"""The command line's usage errors: wrong names and CPU sets are refused before anything runs (no root needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    return done.returncode, done.stdout + done.stderr


def test_unknown_names_are_usage_errors_listing_the_valid_ones():
    code, output = bench("--servers", "epoll", "nosuch")
    assert code == 2 and "unknown server(s) nosuch" in output and "epoll-pool" in output and "nginx" in output
    code, output = bench("--workloads", "nosuch")
    assert code == 2 and "unknown workload(s) nosuch" in output and "pipeline-16" in output
    code, output = bench("--preset", "nosuch")
    assert code == 2 and "invalid choice: 'nosuch'" in output and "quick" in output


def test_cpus_must_be_usable_and_well_formed():
    code, output = bench("--cpus", "0-x,1")
    assert code == 2 and "--cpus takes SERVER,CLIENT CPU numbers (SERVER may be a range A-B)" in output, output
    code, output = bench("--cpus", "0-4096,1")
    assert code == 2 and "--cpus: usable CPUs are" in output, output


def test_profile_is_still_accepted_as_the_older_spelling_of_preset():
    from bench.cli import resolve, sweep_parser
    parser = sweep_parser()
    for option in ("--preset", "--profile"):
        config = resolve(parser.parse_args([option, "smoke"]), parser)
        assert config.preset == "smoke" and config.servers == ("epoll", "blocking", "floor", "nginx")


def test_paths_are_shown_as_the_host_names_them(monkeypatch):
    """In the compose bench container the results directory is the host's ./results (or BENCH_RESULTS)."""
    from bench.cli import HOST_RESULTS_ENV, RESULTS_DIR, shown
    run = RESULTS_DIR / "20260101-000000-quick" / "report.md"
    monkeypatch.delenv(HOST_RESULTS_ENV, raising=False)
    assert shown(run) == str(run)
    monkeypatch.setenv(HOST_RESULTS_ENV, "./results")
    assert shown(run) == "./results/20260101-000000-quick/report.md"
    monkeypatch.setenv(HOST_RESULTS_ENV, "/srv/runs")
    assert shown(run) == "/srv/runs/20260101-000000-quick/report.md"
    assert shown(Path("/tmp/elsewhere")) == "/tmp/elsewhere"  # --out outside the results directory
