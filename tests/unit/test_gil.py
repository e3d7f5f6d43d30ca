"""The gil experiment without running anything: its servers, the four runs' comparison, the report (pure)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.analysis.experiments import gil_paragraph, gil_run
from bench.analysis.report import write_gil_report
from bench.cli import gil_parser, resolve, sweep_parser
from bench.results import Profiling, Record, Run, ServerProfile, save, upgraded
from bench.runners.base import NAMED_PYTHONS, probe_answer, resolve_python

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "results" / "reference" / "results.json"
SERVERS = ("threaded", "epoll-pool", "epoll", "reuseport")


def test_the_gil_experiment_sweeps_its_four_models_unless_told_otherwise():
    parser = sweep_parser()
    config = resolve(parser.parse_args(["--experiments", "gil"]), parser)
    assert config.servers == (*SERVERS, "floor", "nginx")
    assert [w.name for w in config.workloads] == ["plaintext", "sleep-5", "cpu-200"]
    config = resolve(parser.parse_args(["--experiments", "gil", "--servers", "poll"]), parser)
    assert config.servers == ("poll", "floor", "nginx")
    config = resolve(parser.parse_args(["--experiments", "gil", "churn"]), parser)  # churn wants every model
    assert {"select", "io-uring", "blocking"} <= set(config.servers)


def test_gil_defaults_to_the_two_builds_of_the_free_threaded_image():
    args = gil_parser().parse_args([])
    assert (resolve_python(args.gil_python), resolve_python(args.server_python)) == (
        NAMED_PYTHONS["gil"], NAMED_PYTHONS["free-threaded"])
    assert args.connections == [64] and not args.no_flamegraphs
    assert resolve_python("/usr/bin/python3.13") == "/usr/bin/python3.13"


def test_a_named_interpreter_missing_on_the_host_points_at_the_image_and_its_build():
    try:
        probe_answer(NAMED_PYTHONS["free-threaded"], "on this host", 127, "", "No such file or directory")
    except Exception as error:  # BenchError
        message = str(error)
    assert "swissknife-ft:latest" in message and "docker/build.sh --free-threaded" in message
    assert "--runner docker" in message


def test_gil_refuses_a_single_server_cpu():
    done = subprocess.run([sys.executable, "-m", "bench", "gil", "--cpus", "0,1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "gil compares one server CPU with several" in done.stderr


def fake_run(tmp_path: Path, gil: bool, cpus: int, rps: dict[str, float]) -> Path:
    """A gil run as `bench gil` leaves it: records at 64 connections, one profile per server with folded stacks."""
    name = f"{'gil' if gil else 'free-threaded'}-{cpus}cpu"
    run_dir = tmp_path / name
    (run_dir / "flamegraphs").mkdir(parents=True)
    reference = upgraded(json.loads(REFERENCE.read_text()))  # a valid run, changed where gil looks
    measured = next(r for r in reference["records"] if r["status"] == "ok")
    records, profiles = [], []
    for server, value in rps.items():
        records += [Record(**measured | {"server": server, "workload": "cpu-200", "connections": 64, "repeat": repeat,
                                         "requests_per_s": value * (1 + repeat / 100),
                                         "cpu_us_per_request": 250.0 * cpus}) for repeat in (1, 2, 3)]
        folded = run_dir / "flamegraphs" / f"cpu-200-{server}.folded"
        locks = 30 if server == "threaded" and not gil else 10  # weights: 10 of 100 samples in take_gil
        folded.write_text(f"python;py::burn_cpu:http.py {100 - locks}\npython;take_gil {locks}\n")
        profiles.append(ServerProfile(server, "cpu-200", 64, "ok", "", "perf_jit", folded=folded.relative_to(
            run_dir).as_posix(), syscalls_per_request=1.5))
    records.append(Record("reuseport", "cpu-200", 64, 1, "unsupported", failure="not here"))
    environment = reference["environment"] | {"server_python": {
        "executable": "/x", "version": "3.13.5", "free_threaded_build": not gil, "gil_enabled": gil}}
    config = reference["config"] | {"server_cpus": list(range(cpus)), "preset": "gil"}
    run = Run(name, "complete", "now", environment, config, records=records,
              profiling=Profiling(2, 1.5, [], profiles=profiles))
    save(run_dir, run)
    return run_dir


def test_the_comparison_states_what_removing_the_gil_changes_from_the_numbers(tmp_path):
    fake_run(tmp_path, True, 1, {"threaded": 4000, "epoll": 4200})
    fake_run(tmp_path, True, 2, {"threaded": 4000, "epoll": 4200})
    fake_run(tmp_path, False, 1, {"threaded": 3600, "epoll": 4000})
    fake_run(tmp_path, False, 2, {"threaded": 7200, "epoll": 4000})
    report, page = write_gil_report(tmp_path)
    assert page.name == "report.html"
    text = report.read_text()
    assert "CPython 3.13.5 (the same version)" in text
    assert "| threaded | no GIL, 2 CPUs | 7,344 | 500.0 | 1.50 | 30.0 |" in text  # medians: the second repeat
    assert "**threaded** without the GIL: on 1 CPU ×0.90 the throughput (4,080 → 3,672 requests/s)" in text
    assert "Going from 1 to 2 CPUs multiplies its throughput by ×1.00 with the GIL and ×2.00 without." in text
    assert "locks 10.0 → 30.0 % of samples" in text


def test_a_model_unsupported_in_a_run_is_named_not_compared(tmp_path):
    runs = [gil_run(Run.from_json(json.loads((d / "results.json").read_text())), d)
            for d in (fake_run(tmp_path, True, 1, {"epoll": 1}), fake_run(tmp_path, False, 1, {"epoll": 1}))]
    assert gil_paragraph(runs, "cpu-200", "reuseport") == (
        "**reuseport** without the GIL: on 1 CPU no comparison (not here).")


def test_bench_gil_makes_four_runs_into_one_directory_and_stops_when_one_is_interrupted(tmp_path):
    from bench.gil import run_gil
    parser = sweep_parser()
    wide = resolve(parser.parse_args(["--experiments", "gil", "--cpus", "0-1,1"]), parser)
    made = []

    def run_one(config, python, out):  # a run as the lifecycle leaves it: its results.json
        made.append((python, config.server_cpus, out.name))
        gil, cpus = python == "/gil", len(config.server_cpus)
        fake_run(tmp_path, gil, cpus, {"threaded": 4000 * cpus})
        return 0

    pythons = {"gil": "/gil", "free-threaded": "/ft"}
    assert run_gil(wide, pythons, tmp_path, run_one) == 0
    assert made == [("/gil", (0,), "gil-1cpu"), ("/gil", (0, 1), "gil-2cpu"), ("/ft", (0,), "free-threaded-1cpu"),
                    ("/ft", (0, 1), "free-threaded-2cpu")]
    assert "×2.00 with the GIL" in (tmp_path / "report.md").read_text()
    made.clear()
    assert run_gil(wide, pythons, tmp_path / "stopped", lambda config, python, out: made.append(out) or 130) == 130
    assert len(made) == 1 and not (tmp_path / "stopped" / "report.md").exists()
