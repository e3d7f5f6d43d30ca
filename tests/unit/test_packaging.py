"""pyproject.toml is the one list of pins; requirements.txt (image and venv) says the same; entry points resolve."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_requirements_txt_pins_exactly_the_pyproject_dependencies_and_test_and_peers_extras():
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    pinned = [*project["dependencies"], *extras["test"], *extras["peers"]]
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line] == pinned
    assert all("==" in requirement for requirement in pinned)


def test_console_entry_points_name_callables():
    scripts = pyproject()["project"]["scripts"]
    assert set(scripts) == {"swissknife-bench", "swissknife-netns", "swissknife-server"}
    for target in scripts.values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target
