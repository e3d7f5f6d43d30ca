"""The gil experiment's four runs (interpreter x server CPUs) into one directory, then its report.md.

The command line (`python3 -m bench gil`) resolves the config and hands over how to make one run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bench.analysis.report import write_gil_report
from bench.config import SweepConfig, cpu_list
from bench.console import console

# One run: its config, the servers' interpreter, its directory -> its exit status.
RunOne = Callable[[SweepConfig, str, Path], int]


def run_gil(wide: SweepConfig, pythons: dict[str, str], out: Path, run_one: RunOne) -> int:
    """Each interpreter (label -> path) on the first of `wide`'s server CPUs, then on all of them, into
    out/<label>-<n>cpu; then out/report.md compares them."""
    status = 0
    for label, python in pythons.items():
        for cpus in (wide.server_cpus[:1], wide.server_cpus):
            console.print(f"gil: {label} interpreter ({python}), server on CPUs {cpu_list(cpus)}")
            code = run_one(replace(wide, server_cpus=cpus), python, out / f"{label}-{len(cpus)}cpu")
            if code not in (0, 1):  # interrupted: stop here (1: some points failed, the others stand)
                return code
            status = max(status, code)
    for path in write_gil_report(out):
        console.print(f"gil: {path}")
    return status
