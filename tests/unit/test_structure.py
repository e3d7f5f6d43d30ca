"""The package shape: runners behind one protocol without an import circle, analysis free of anything that runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNNING = ("bench.runners", "bench.sweep", "bench.lifecycle", "bench.holder", "bench.verify", "netns", "docker")


def imported_by(module: str) -> set[str]:
    """Every module a fresh interpreter has loaded after importing `module` (and only it)."""
    code = f"import sys; import {module}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    return set(done.stdout.split())


def test_the_packages_import_on_their_own():
    subprocess.run([sys.executable, "-c", "import bench.runners, bench.analysis"], cwd=ROOT, check=True, timeout=60)


def test_analysis_imports_nothing_that_runs_things():
    for module in ("bench.analysis.report", "bench.analysis.compare", "bench.analysis.experiments",
                   "bench.analysis.index", "bench.analysis.html"):
        loaded = imported_by(module)
        assert not [m for m in loaded if m.startswith(RUNNING)], (module, sorted(loaded))


def test_runner_modules_import_in_any_order_without_a_circle():
    """Each runner module first in a fresh interpreter: a circle would fail on a half-initialised module."""
    for module in ("bench.runners.base", "bench.runners.process", "bench.runners.docker", "bench.profiling.__main__"):
        loaded = imported_by(module)
        assert "bench.sweep" not in loaded and "bench.cli" not in loaded, module
    assert "bench.runners.docker" not in imported_by("bench.runners")  # the Docker SDK only when chosen
