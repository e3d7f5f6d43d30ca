"""index.html of a results directory: every run under it (date, preset, machine, runner, status) with a link
to its page (pure: the results.json files in, one page out)."""

from __future__ import annotations

from pathlib import Path

from bench.analysis.document import Bullets, Document, Entry, Section, Table, Text, page_of
from bench.analysis.html import page
from bench.errors import BenchError
from bench.results import JSON_NAME, Run, load, write_atomic

INDEX_NAME = "index.html"


def runs_under(root: Path) -> list[tuple[Path, Run]]:
    """Every run in `root` or below it, newest first; a results.json that cannot be read is skipped."""
    found = []
    for path in root.rglob(JSON_NAME):
        try:
            found.append((path.parent, load(path.parent)))
        except BenchError:
            continue
    return sorted(found, key=lambda pair: (pair[1].started_at, str(pair[0])), reverse=True)


def row(root: Path, run_dir: Path, run: Run) -> list[Entry]:
    env, config = run.environment, run.config
    name = run_dir.relative_to(root).as_posix()
    link = page_of(run_dir)
    ok = sum(r.status == "ok" for r in run.records)
    failed = sum(r.status == "failed" for r in run.records)
    return [Entry(f"[{name}]({link.relative_to(root).as_posix()})" if link else name),
            Entry(run.started_at.replace("T", " ")[:16]), Entry(config["preset"]),
            Entry(f"{env['cpu_model']}, {env['cpus']} CPUs, kernel {env['kernel']}"), Entry(env["runner"]),
            Entry(run.status), Entry(str(len(run.records)), len(run.records)),
            Entry(f"{ok} ok, {failed} failed", failed)]


def comparisons_under(root: Path) -> list[Path]:
    """Pages that compare runs: `bench compare --html` pages and `bench gil` directories' reports."""
    gil = [page for path in root.rglob("report.md") if not (path.parent / JSON_NAME).exists()
           if (page := page_of(path.parent))]
    return sorted([*root.rglob("compare-*.html"), *gil])


def index_document(root: Path) -> Document:
    runs = runs_under(root)
    sections = [Section("Runs", [Table(["run", "started (UTC)", "preset", "machine", "runner", "status", "records",
                                        "points"], [row(root, d, r) for d, r in runs], align="llllllrr")])]
    if pages := comparisons_under(root):
        sections.append(Section("Comparisons", [Bullets([f"[{page.relative_to(root).as_posix()}]"
                                                         f"({page.relative_to(root).as_posix()})" for page in pages])]))
    return Document(f"swissknife runs in `{root.name or root.resolve().name}`",
                    [Text(f"{len(runs)} runs, newest first. Click a heading to sort; each run links its report "
                          "(report.html, or report.md for a run not redrawn since: `python3 -m bench plot DIR`).")],
                    sections)


def write_index(root: Path) -> Path:
    write_atomic(root / INDEX_NAME, page(index_document(root)))
    return root / INDEX_NAME
