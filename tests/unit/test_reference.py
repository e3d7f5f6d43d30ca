"""The README's reference table quotes results/reference-docker/results.json, cell by cell (no hand-typed numbers)."""

from __future__ import annotations

import re
from pathlib import Path

from bench.analysis.summary import median, summarize
from bench.results import load

ROOT = Path(__file__).resolve().parents[2]

# README column heading -> (workload, connections) of the reference run
COLUMNS = [("plaintext", 16), ("plaintext", 256), ("sleep-5", 256), ("cpu-200", 256), ("idle-10000", 32), ("churn", 16)]
NUMBER_PAIR = re.compile(r"([\d,]+) / ([\d.]+)")


def readme_rows() -> dict[str, list[str]]:
    """server -> its cells, from the table under the reference run's heading."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Results: the published reference run"):].split("\n\n| server |", 1)[1]
    rows = {}
    for line in table.split("\n\n", 1)[0].splitlines()[2:]:
        server, *cells = (cell.strip().strip("*") for cell in line.strip("|").split("|"))
        rows[server.split(" (")[0]] = cells
    return rows


def test_every_quoted_number_is_the_reference_runs_median():
    cells = {cell.key: cell for cell in summarize(load(ROOT / "results" / "reference-docker").records)}
    rows = readme_rows()
    assert set(rows) == {"blocking", "threaded", "select", "poll", "epoll", "epoll-et", "epoll-pool", "asyncio",
                         "reuseport", "io-uring", "floor", "nginx"}
    quoted = 0
    for server, row in rows.items():
        assert len(row) == len(COLUMNS), (server, row)
        for text, (workload, connections) in zip(row, COLUMNS, strict=False):
            cell = cells[(workload, server, connections)]
            if not (pair := NUMBER_PAIR.search(text.replace("*", ""))):
                assert median(cell, "requests_per_s") is None, (server, workload, text)  # failed/unsupported
                continue
            requests, cpu = pair.groups()
            assert requests == f"{median(cell, 'requests_per_s'):,.0f}", (server, workload, text)
            assert abs(float(cpu) - median(cell, "cpu_us_per_request")) < 0.051 * max(1, float(cpu) / 10), (
                server, workload, text, median(cell, "cpu_us_per_request"))
            quoted += 1
    assert quoted >= 50
