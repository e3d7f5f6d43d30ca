"""results.json: saved atomically, validated on load, older schemas upgraded."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from bench.analysis.document import table_lines
from bench.analysis.report import environment_table
from bench.errors import BenchError
from bench.results import ENGINE_FIELDS_6, SCHEMA_VERSION, Run, load, schema, upgraded
from bench.runners.engines import seccomp_profile

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "results" / "reference" / "results.json"
# engines.Engine.describe of the two engines verified here (tests/test_engine26.py runs them): Debian 12's
# docker.io and trixie's, started beside it (its containerd, the host's runc).
ENGINE_20 = {"role": "server", "engine": "unix:///var/run/docker.sock", "daemon_id": "G5L3:FGO3:W2I6:2K44",
             "host_name": "vm", "kernel": "6.18.44", "cpus": 2, "os": "Debian GNU/Linux 12 (bookworm)",
             "docker": "20.10.24+dfsg1", "api_version": "1.41", "cgroup_version": "1", "cgroup_driver": "cgroupfs",
             "seccomp_profile": "default", "security_options": ["name=seccomp,profile=default"],
             "containerd": "1.6.20~ds1-1+deb12u3", "runc": "1.1.5+ds1-1+deb12u1"}
ENGINE_26 = {**ENGINE_20, "role": "client", "engine": "unix:///var/tmp/sk-engine26-x/docker.sock",
             "daemon_id": "72284830-7d29-47de-9cb6-f91b9edcd54f", "docker": "26.1.5+dfsg1", "api_version": "1.45",
             "seccomp_profile": "builtin", "security_options": ["name=seccomp,profile=builtin"],
             "containerd": "1.7.24~ds1-6+deb13u1"}


def current() -> dict:
    return upgraded(json.loads(REFERENCE.read_text()))


def test_the_reference_run_is_valid_in_the_current_schema():
    document = current()
    assert document["schema_version"] == SCHEMA_VERSION
    jsonschema.validate(document, schema())
    assert upgraded(document) == document  # the current schema is left alone


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_older_schemas_still_load(tmp_path, version):
    """Schema 1 had one server_cpu, schema 2 called the preset `profile`, schema 3 had no engine_cpu_share,
    schema 4 no engines and no per-client figures, schema 5 engines without API, cgroup and seccomp: all load,
    plot and compare."""
    document = current()
    engines = ("server_engine", "client_engines", "server_addr")
    config = {key: value for key, value in document["config"].items() if version == 5 or key not in engines}
    if version < 3:
        config["profile"] = config.pop("preset")
    if version == 1:
        config["server_cpu"] = config.pop("server_cpus")[0]
    dropped = {"clients"} if version == 4 else {"clients", "engine_cpu_share"} if version < 4 else set()
    records = [{key: value for key, value in r.items() if key not in dropped} for r in document["records"]]
    (tmp_path / "results.json").write_text(json.dumps({**document, "schema_version": version, "config": config,
                                                       "records": records}))
    run = load(tmp_path)
    assert run.config["server_cpus"] == document["config"]["server_cpus"]
    assert run.config["preset"] == document["config"]["preset"] and run.schema_version == SCHEMA_VERSION
    assert (run.config["server_engine"], run.config["client_engines"]) == (None, [])
    assert all(record.clients is None for record in run.records) and len(run.records) == len(records)
    if version < 4:
        assert {r.engine_cpu_share for r in run.records} == {None}


def test_a_file_that_does_not_match_says_where(tmp_path):
    document = current()
    document["records"][0]["connections"] = "many"
    (tmp_path / "results.json").write_text(json.dumps(document))
    with pytest.raises(BenchError, match="does not match results.schema.json"):
        load(tmp_path)
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(BenchError, match="cannot read"):
        load(tmp_path)


def test_schema_5_engines_get_null_engine_facts_and_the_report_prints_what_there_was():
    before = {key: value for key, value in ENGINE_20.items() if key not in ENGINE_FIELDS_6}
    document = {**current(), "schema_version": 5}
    document["environment"] = {**document["environment"], "engines": [before, {**before, "role": "client"}]}
    document["config"] = {**document["config"], "server_engine": before["engine"],
                          "client_engines": [before["engine"]], "server_addr": "fd00:5b::1"}
    now = upgraded(document)
    jsonschema.validate(now, schema())
    assert [set(e) - set(before) for e in now["environment"]["engines"]] == [set(ENGINE_FIELDS_6)] * 2
    assert {e[key] for e in now["environment"]["engines"] for key in ENGINE_FIELDS_6} == {None}
    lines = table_lines(environment_table(Run.from_json(now)))
    row = next(line for line in lines if line.startswith("| engine 1 (server)"))
    assert row.endswith("Docker 20.10.24+dfsg1 |")


def test_every_engine_is_recorded_with_its_api_cgroup_and_seccomp_and_reported():
    document = current()
    document["environment"] = {**document["environment"], "engines": [ENGINE_20, ENGINE_26]}
    jsonschema.validate(document, schema())
    lines = table_lines(environment_table(Run.from_json(document)))
    assert ("| engine 2 (client) | `unix:///var/tmp/sk-engine26-x/docker.sock`: host vm, daemon "
            "72284830-7d29-47de-9cb6-f91b9edcd54f, kernel 6.18.44, 2 CPUs, Docker 26.1.5+dfsg1 (API 1.45, containerd "
            "1.7.24~ds1-6+deb13u1, runc 1.1.5+ds1-1+deb12u1), cgroup v1 (cgroupfs driver), seccomp profile builtin |"
            ) in lines
    for missing in ENGINE_FIELDS_6:  # every fact is required (null where an engine cannot say)
        engine = {key: value for key, value in ENGINE_26.items() if key != missing}
        document["environment"]["engines"] = [engine]
        with pytest.raises(jsonschema.ValidationError, match=missing):
            jsonschema.validate(document, schema())


@pytest.mark.parametrize(("options", "profile"), [
    (["name=seccomp,profile=default"], "default"),  # Engine 20.10 to 24
    (["name=apparmor", "name=seccomp,profile=builtin", "name=cgroupns"], "builtin"),  # 25+ on a v2 host
    (["name=seccomp,profile=/etc/docker/seccomp.json", "name=rootless"], "/etc/docker/seccomp.json"),
    (["name=apparmor"], None),  # a kernel without seccomp
])
def test_the_seccomp_profile_is_read_from_docker_infos_security_options(options, profile):
    assert seccomp_profile(options) == profile
