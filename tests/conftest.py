"""Shared by every suite: the project on sys.path, the suite markers, and the topology the real-namespace tests need.

Markers (pyproject.toml), set here by where a test lives: `unit` (tests/unit: no root, no namespaces, no
Docker), `docker` (a Docker engine and the image), `browser` (Debian's chromium and chromium-driver), `netns`
(root and real network namespaces, wrk, perf).
Select with -m, e.g. `pytest -m "not docker"`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DOCKER_SUITES = {"test_docker_image.py", "test_docker_runner.py", "test_compose_e2e.py", "test_engines.py",
                 "test_engine26.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.relative_to(ROOT)
        if path.parts[:2] == ("tests", "unit"):
            item.add_marker("unit")
        elif path.name in DOCKER_SUITES:
            item.add_marker("docker")
        elif path.name == "test_report_html.py":
            item.add_marker("browser")
        elif not path.name.startswith("test_servers"):  # the servers' suites run on loopback, as any user
            item.add_marker("netns")


@pytest.fixture(scope="module")
def topology() -> None:
    """sk-server/sk-client joined by swissknife0/1, built (or repaired) by the real CLI."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    up = subprocess.run([sys.executable, str(ROOT / "netns" / "setup.py"), "up"], capture_output=True, text=True,
                        timeout=60)
    assert up.returncode == 0, up.stderr
