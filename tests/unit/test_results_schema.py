"""results.json: saved atomically, validated on load, older schemas upgraded."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from bench.errors import BenchError
from bench.results import SCHEMA_VERSION, load, schema, upgraded

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "results" / "reference" / "results.json"


def current() -> dict:
    return upgraded(json.loads(REFERENCE.read_text()))


def test_the_reference_run_is_valid_in_the_current_schema():
    document = current()
    assert document["schema_version"] == SCHEMA_VERSION
    jsonschema.validate(document, schema())
    assert upgraded(document) == document  # the current schema is left alone


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_older_schemas_still_load(tmp_path, version):
    """Schema 1 had one server_cpu, schema 2 called the preset `profile`, schema 3 had no engine_cpu_share,
    schema 4 no engines and no per-client figures: all load, plot and compare."""
    document = current()
    engines = ("server_engine", "client_engines", "server_addr")
    config = {key: value for key, value in document["config"].items() if key not in engines}
    if version < 3:
        config["profile"] = config.pop("preset")
    if version == 1:
        config["server_cpu"] = config.pop("server_cpus")[0]
    dropped = {"clients"} if version == 4 else {"clients", "engine_cpu_share"}
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
