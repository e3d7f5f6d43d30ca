"""Subjects as data: the TOML format and its refusals, the built-in descriptions, and bench deciding by them
(never by a server's name)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from bench import subjects
from bench.config import WORKLOADS, Point, SweepConfig, plan, workload
from bench.runners.base import profiled_support, server_command
from bench.sweep import HostLimits, server_workers, unsupported
from servers.kinds import RUNNABLE
from servers.select_server import FD_SETSIZE
from tests.unit.test_cli_usage import bench_here

ROOT = Path(__file__).resolve().parents[2]
LIMITS = HostLimits(open_files=20_000, threads=30_000, threads_because="kernel.threads-max")
SMALLEST = 'name = "mine"\ncommand = ["python3", "{dir}/server.py", "{host}", "{port}"]\nroutes = ["/"]\n'


def subject_file(tmp_path: Path, text: str, name: str = "subject.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_smallest_file_is_a_user_subject_whose_command_names_files_beside_it(tmp_path):
    subject = subjects.load_file(subject_file(tmp_path, SMALLEST))
    assert (subject.name, subject.category, subject.routes) == ("mine", "user", ("/",))
    assert subject.directory == str(tmp_path.resolve())
    argv = subject.argv(["python3"], {"host": "fd00:5a::1", "port": "8080"})
    assert argv == ["python3", f"{tmp_path.resolve()}/server.py", "fd00:5a::1", "8080"]


@pytest.mark.parametrize(("text", "says"), [
    ('command = ["x", "{host}", "{port}"]\nroutes = ["/"]\n', "missing field 'name'"),
    ('name = "mine"\nroutes = ["/"]\n', "missing field 'command'"),
    ('name = "mine"\ncommand = ["x", "{host}", "{port}"]\n', "missing field 'routes'"),
    (SMALLEST.replace('["/"]', '["/", "/upload"]'), "unknown route(s) '/upload'"),
    (SMALLEST.replace('"{port}"', '"8080"'), "command must contain {port}"),
    (SMALLEST.replace('"{host}"', '"::1"'), "command must contain {host}"),
    (SMALLEST.replace('"{port}"', '"{prot}"'), "unknown placeholder(s) {prot}"),
    (SMALLEST + 'colour = "red"\n', "unknown field 'colour'"),
    (SMALLEST + 'limits = { fd_setsize = "many" }\n', "field limits.'fd_setsize' must be a int"),
    (SMALLEST + 'limits = { processes = "workers" }\n', "needs `workers`"),
    (SMALLEST.replace('"mine"', '"My Server"'), "subject name 'My Server'"),
    (SMALLEST.replace('["/"]', '["/sleep/MS"]'), 'routes must include "/"'),
    ('name = "mine"\ncommand = "python3 server.py"\nroutes = ["/"]\n', "field 'command' must be a list"),
    ("name = \n", "not valid TOML"),
])
def test_a_bad_file_is_refused_with_one_line_naming_the_file_and_the_field(tmp_path, text, says):
    path = subject_file(tmp_path, text)
    with pytest.raises(subjects.SubjectError) as refused:
        subjects.load_file(path)
    message = str(refused.value)
    assert says in message and message.startswith(str(path)) and "\n" not in message, message


def test_a_missing_file_and_a_name_taken_by_another_subject_are_refused(tmp_path):
    with pytest.raises(subjects.SubjectError, match="cannot read it"):
        subjects.load_file(tmp_path / "nosuch.toml")
    taken = subjects.load_file(subject_file(tmp_path, SMALLEST.replace('"mine"', '"epoll"')))
    with pytest.raises(subjects.SubjectError, match="'epoll' is already defined"):
        subjects.Registry().add(taken)


def test_the_cli_refuses_a_bad_subject_before_anything_runs_and_leaves_no_run_directory(tmp_path, capsys):
    bad = subject_file(tmp_path, SMALLEST.replace('"{port}"', '"8080"'))
    out = tmp_path / "run"
    code, output = bench_here(capsys, "--subject", str(bad), "--out", str(out))
    assert code == 2 and f"--subject {bad}: subject 'mine': command must contain {{port}}" in output
    assert len(output.strip().splitlines()[-1]) < 300 and not out.exists()


def test_list_subjects_prints_every_category_and_the_user_s_file(tmp_path, capsys):
    path = subject_file(tmp_path, SMALLEST.replace('"mine"', '"listed-mine"'))
    code, output = bench_here(capsys, "--list-subjects", "--json", "--subject", str(path))
    assert code == 0
    listed = {s["name"]: s for s in json.loads(output)}
    assert {s["category"] for s in listed.values()} == set(subjects.CATEGORIES)
    assert listed["select"]["limits"]["fd_setsize"] == FD_SETSIZE
    assert listed["listed-mine"]["command"][-1] == "{port}" and listed["listed-mine"]["category"] == "user"
    code, output = bench_here(capsys, "--list-subjects")
    assert code == 0 and "gunicorn-gthread" in output and "FD_SETSIZE 1024" in output


def test_the_built_in_descriptions_state_what_the_servers_themselves_do():
    models = subjects.REGISTRY.names("model")
    assert models == [kind for kind in RUNNABLE if kind in models]  # every model, in servers.kinds' order
    assert set(subjects.REGISTRY.names("model", "reference")) - {"nginx"} == set(RUNNABLE)
    for name in RUNNABLE:  # --workers exactly where the server takes it
        assert bool(subjects.get(name).workers) == RUNNABLE[name].takes_workers, name
    assert subjects.get("select").limits.fd_setsize == FD_SETSIZE
    assert set(subjects.REGISTRY.names("peer")) == {"uvicorn", "granian", "gunicorn-sync", "gunicorn-gthread",
                                                    "gunicorn-gevent", "aiohttp", "tornado"}
    assert all("{port}" in " ".join(s.command) for s in subjects.REGISTRY.subjects.values())


def test_unsupported_points_follow_the_description(tmp_path):
    keep_alive = subjects.load_file(subject_file(tmp_path, SMALLEST.replace('"mine"', '"keeper"')
                                                 + "keep_alive_only = true\nlimits = { fd_setsize = 100 }\n"))
    registry = subjects.Registry()
    registry.add(keep_alive)
    saved, subjects.REGISTRY = subjects.REGISTRY, registry
    try:
        config = SweepConfig("test", ("keeper",), (WORKLOADS["plaintext"], WORKLOADS["churn"], WORKLOADS["sleep-5"],
                                                  workload("idle-200")), (16,), 1, 1, 1)
        reasons = {p.workload.name: unsupported(p, LIMITS) for p in plan(config)}
    finally:
        subjects.REGISTRY = saved
    assert reasons["plaintext"] is None
    assert "keeper answers only kept-alive connections" in reasons["churn"]
    assert "keeper serves only / (a user's server), not /sleep/MS" == reasons["sleep-5"]
    assert "keeper watches descriptors below FD_SETSIZE (100) only" in reasons["idle-200"]


def test_workers_and_the_command_come_from_the_description():
    point = Point("reuseport", workload("idle-100000"), 32, 1)
    assert server_workers(point, 20_000) == 7 and server_workers(Point("epoll", point.workload, 32, 1), 20_000) is None
    nginx = server_command("nginx", "::1", 80, Path("/tmp/x"), "python3", ("-X", "perf"))
    assert nginx == ["python3", "-X", "perf", "-m", "bench.nginx", "/tmp/x", "::1", "80", "1"]
    assert profiled_support("nginx", subjects_support()).method == "none"
    assert profiled_support("uvicorn", subjects_support()).method == "perf_jit"
    assert [route.route for route in (WORKLOADS["plaintext"], WORKLOADS["bytes-1m"], WORKLOADS["cpu-200"],
                                      WORKLOADS["pipeline-16"], WORKLOADS["sleep-5"])] == [
        "/", "/bytes/N", "/cpu/US", "/", "/sleep/MS"]


def subjects_support():
    from bench.profiling import PythonSupport
    return PythonSupport(("-X", "perf_jit"), "perf_jit")


def string_constants(path: Path) -> list[tuple[int, str]]:
    """A module's string literals outside docstrings (a docstring may explain a model by its name)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_server_name_appears_in_bench_outside_the_descriptions():
    names = set(subjects.REGISTRY.names())
    # bench/nginx.py is the nginx subject's launcher (it writes nginx's config and execs the nginx binary);
    # bench/core_cost.py times two servers' handlers in-process, by their classes; bench/analysis/lessons.py
    # writes prose about particular models (poll against epoll): none of them decides what runs.
    exempt = {ROOT / "bench" / name for name in ("subjects.py", "nginx.py", "core_cost.py", "analysis/lessons.py")}
    found = [f"{path.relative_to(ROOT)}:{line}: {value!r}"
             for path in sorted((ROOT / "bench").rglob("*.py")) if path not in exempt
             for line, value in string_constants(path)
             if value in names or any(f"{name}'s" in value or f" {name} " in f" {value} " for name in names)]
    assert not found, "\n".join(found)
