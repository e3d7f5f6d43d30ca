"""What clients feel at a constant rate (open-loop points, bench/openloop.py): latency–load curves, the
capacity at an SLO, corrected beside uncorrected p99, slow requests' effect on fast ones, repeated beside
varied requests, and a paragraph generated from the numbers (pure: the run's records in, the report's sections
and the plots out)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt

from bench import subjects
from bench.analysis import plots
from bench.analysis.document import Entry, Figure, Section, Table, Text
from bench.results import Record

SLOS_US = (1_000, 10_000)  # the p99 a server must hold: 1 ms and 10 ms
CURVES = (("latency_p50_us", "p50"), ("latency_p99_us", "p99"), ("latency_p99_9_us", "p99.9"))
FAST = "/"  # the fast route of the mixes
PLAIN, VARIED = "latency-plaintext", "latency-varied"


@dataclass(frozen=True)
class Level:
    """One server's open-loop point of one workload and connection count at one asked rate, over its repeats."""

    workload: str
    server: str
    connections: int
    rate_asked: str
    offered: float  # medians over the ok repeats
    figures: dict[str, float | None]  # record field -> median
    fast_p99_us: float | None  # a mix's fast route
    overloaded: bool  # in any repeat
    generator_bound: bool  # in any repeat
    failed: int

    @property
    def valid(self) -> bool:
        """Measures the server: it answered, and the generator kept the schedule."""
        return not self.generator_bound and self.figures.get("latency_p99_us") is not None


FIELDS = ("latency_p50_us", "latency_p99_us", "latency_p99_9_us", "latency_uncorrected_p99_us",
          "cpu_us_per_request", "achieved_rate", "requests_per_s")


def middle(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def levels(records: list[Record]) -> list[Level]:
    """Open-loop records folded over their repeats, in run order."""
    groups: dict[tuple[str, str, int, str], list[Record]] = {}
    for record in records:
        if record.rate_asked is not None:
            key = (record.workload, record.server, record.connections, record.rate_asked)
            groups.setdefault(key, []).append(record)
    found = []
    for (workload, server, connections, asked), group in groups.items():
        ok = [r for r in group if r.status == "ok"]
        if not ok:
            continue
        found.append(Level(
            workload, server, connections, asked, middle(r.offered_rate for r in ok),
            {name: middle(getattr(r, name) for r in ok) for name in FIELDS},
            middle((r.classes or {}).get(FAST, {}).get("latency_p99_us") for r in ok),
            any(r.overloaded for r in ok), any(r.generator_bound for r in ok), len(group) - len(ok)))
    return found


def curves(found: list[Level]) -> dict[tuple[str, int], dict[str, list[Level]]]:
    """(workload, connections) -> server -> its levels by offered rate."""
    out: dict[tuple[str, int], dict[str, list[Level]]] = {}
    for level in found:
        out.setdefault((level.workload, level.connections), {}).setdefault(level.server, []).append(level)
    for servers in out.values():
        for server_levels in servers.values():
            server_levels.sort(key=lambda level: level.offered)
    return out


def capacity(server_levels: list[Level], slo_us: float) -> float | None:
    """The highest offered rate whose p99 held the SLO, the server not overloaded (and the generator kept up)."""
    held = [lv.offered for lv in server_levels
            if lv.valid and not lv.overloaded and lv.figures["latency_p99_us"] <= slo_us]
    return max(held, default=None)


def plot_path(directory: Path, workload: str, connections: int, figure: str) -> Path:
    return directory / f"{workload}-c{connections}-{figure}.png"


def draw(records: list[Record], directory: Path) -> list[Path]:
    """Per workload and connection count: the latency–load curves (p50, p99, p99.9; log latency; overloaded
    points as crosses) and corrected beside uncorrected p99 (PNG for report.md, SVG beside it for report.html)."""
    paths = []
    for (workload, connections), servers in curves(levels(records)).items():
        directory.mkdir(parents=True, exist_ok=True)
        looks = plots.styles(list(servers))
        panels = [*CURVES, (None, "corrected (solid) and uncorrected (faint) p99")]
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
        for ax, (key, title) in zip(axes[0], panels, strict=True):
            for server, server_levels in servers.items():
                shown = [lv for lv in server_levels if lv.valid]
                x = [lv.offered for lv in shown]
                look = looks[server] | {"markersize": 4}
                y = [lv.figures[key or "latency_p99_us"] / 1e3 for lv in shown]
                line = ax.plot(x, y, **look)[0]
                if crosses := [(a, b) for a, b, lv in zip(x, y, shown, strict=True) if lv.overloaded]:
                    ax.scatter(*zip(*crosses, strict=True), marker="x", s=60, color=line.get_color())
                if key is None:
                    uncorrected = [lv.figures["latency_uncorrected_p99_us"] for lv in shown]
                    faint = {k: v for k, v in look.items() if k != "label"} | {"color": line.get_color()}
                    ax.plot(x, [u / 1e3 if u else None for u in uncorrected], alpha=0.35, **faint)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("offered load (requests/s)")
            ax.set_ylabel("latency (ms)")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{workload}, {connections} conn.: {title}")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), title="server (x: overloaded)")
        path = plot_path(directory, workload, connections, "latency-load")
        plots.save(fig, path)
        paths.append(path)
    return paths


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value / 1e3:.2f}"


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def ms_entry(value: float | None, level: Level | None = None) -> Entry:
    """Latency in ms, sorted by its value; × overloaded, (gen) the generator set the pace."""
    marks = "" if level is None else (" ×" if level.overloaded else "") + (" (gen)" if level.generator_bound else "")
    return Entry(ms(value) + marks, None if value is None else value / 1e3)


def rate_entry(value: float | None, text: str | None = None) -> Entry:
    return Entry(text or rate(value), value)


def capacity_table(servers: dict[str, list[Level]]) -> Table:
    rows = []
    for server, server_levels in servers.items():
        subject = subjects.get(server)
        rows.append([Entry(server), Entry(subject.model if subject else "—"),
                     rate_entry(capacity(server_levels, SLOS_US[0])), rate_entry(capacity(server_levels, SLOS_US[1])),
                     rate_entry(peak(server_levels))])
    return Table(["server", "model", "highest rate with p99 ≤ 1 ms", "with p99 ≤ 10 ms", "closed-loop peak (wrk)"],
                 rows, title="Capacity at an SLO", align="llrrr")


def peak(server_levels: list[Level]) -> float | None:
    # Fractions of the peak give it back: offered / fraction.
    for level in server_levels:
        if level.rate_asked.endswith("×peak"):
            return level.offered / float(level.rate_asked.removesuffix("×peak"))
    return None


def side_by_side(servers: dict[str, list[Level]]) -> Table:
    """Corrected and uncorrected p99 at every rate: what a closed-loop measurement would have shown."""
    rows = []
    for server, server_levels in servers.items():
        for lv in server_levels:
            flags = ", ".join(name for name, on in (("overloaded", lv.overloaded),
                                                    ("generator-bound", lv.generator_bound),
                                                    (f"{lv.failed} failed", lv.failed)) if on)
            rows.append([Entry(server), rate_entry(lv.offered, f"{rate(lv.offered)} ({lv.rate_asked})"),
                         rate_entry(lv.figures["achieved_rate"]), ms_entry(lv.figures["latency_p99_us"]),
                         ms_entry(lv.figures["latency_uncorrected_p99_us"]), Entry(flags)])
    return Table(["server", "offered req/s", "achieved", "p99 corrected (ms)", "p99 uncorrected (ms)", "flags"],
                 rows, title="Corrected and uncorrected p99", align="lrrrrl")


def same_rate(a: list[Level], b: list[Level]) -> list[tuple[Level, Level]]:
    """Levels of two workloads asked the same absolute rate (fractions of different peaks do not compare)."""
    by_rate = {lv.rate_asked: lv for lv in b if not lv.rate_asked.endswith("×peak")}
    return [(lv, by_rate[lv.rate_asked]) for lv in a if lv.rate_asked in by_rate]


def fast_table(found: dict[tuple[str, int], dict[str, list[Level]]], connections: int) -> Table | None:
    """The fast requests' p99 alone and beside 1 % slow ones, at the same rates."""
    alone = found.get((PLAIN, connections), {})
    mixes = [w for w, c in found if c == connections and w.startswith("latency-mix")]
    if not alone or not mixes:
        return None
    rows = []
    for server, server_levels in alone.items():
        for lv in server_levels:
            if lv.rate_asked.endswith("×peak"):
                continue
            cells = []
            for mix in mixes:
                match = [m for m in found[(mix, connections)].get(server, []) if m.rate_asked == lv.rate_asked]
                cells.append(ms_entry(match[0].fast_p99_us, match[0]) if match else Entry("—"))
            rows.append([Entry(server), rate_entry(lv.offered), ms_entry(lv.figures["latency_p99_us"], lv), *cells])
    return Table(["server", "req/s", "`/` alone p99 (ms)", *(f"`/` in {w} p99 (ms)" for w in mixes)], rows,
                 title=f"Fast requests beside 1 % slow ones, {connections} connections")


def varied_table(found: dict[tuple[str, int], dict[str, list[Level]]], connections: int) -> Table | None:
    """Repeated beside varied plaintext at the same rates: server CPU per request and p99."""
    plain, varied = found.get((PLAIN, connections), {}), found.get((VARIED, connections), {})
    if not plain or not varied:
        return None
    rows = [[Entry(server), rate_entry(a.offered), cpu(a), cpu(b), ms_entry(a.figures["latency_p99_us"], a),
             ms_entry(b.figures["latency_p99_us"], b)]
            for server in plain for a, b in same_rate(plain[server], varied.get(server, []))]
    return Table(["server", "req/s", "CPU µs/req repeated", "varied", "p99 repeated (ms)", "varied"], rows,
                 title=f"Repeated and varied requests, {connections} connections")


def cpu(level: Level) -> Entry:
    value = level.figures["cpu_us_per_request"]
    return Entry("—" if value is None else f"{value:.1f}", value)


def paragraph(found: dict[tuple[str, int], dict[str, list[Level]]]) -> str:
    """Which model holds which SLO up to what rate, and what 1 % slow requests do to the fast ones' p99."""
    sentences = []
    for (workload, connections), servers in found.items():
        if workload != PLAIN:
            continue
        for slo in SLOS_US:
            held = sorted(((capacity(lv, slo), s) for s, lv in servers.items() if capacity(lv, slo)), reverse=True)
            text = ", ".join(f"{s} {rate(c)}" for c, s in held) or "none"
            never = [s for s, lv in servers.items() if not capacity(lv, slo)]
            sentences.append(f"At {connections} connections, p99 ≤ {slo / 1e3:g} ms held up to (requests/s): {text}"
                             + (f"; never at the rates tried: {', '.join(never)}" if never else "") + ".")
        for mix in (w for w, c in found if c == connections and w.startswith("latency-mix")):
            worst = []
            for server, server_levels in servers.items():
                pairs = same_rate(server_levels, found[(mix, connections)].get(server, []))
                pairs = [(a, b) for a, b in pairs if a.valid and b.fast_p99_us and not b.generator_bound]
                if pairs:
                    a, b = pairs[-1]  # the highest common rate
                    worst.append(f"{server} {ms(a.figures['latency_p99_us'])} → {ms(b.fast_p99_us)} ms at "
                                 f"{rate(a.offered)}/s{' (overloaded)' if b.overloaded else ''}")
            if worst:
                sentences.append(f"With {mix}'s 1 % slow requests the fast requests' p99 went: {'; '.join(worst)}.")
    return " ".join(sentences)


def sections(records: list[Record], plot_dir: Path, report_dir: Path) -> list[Section]:
    """The report's open-loop sections (report.md and report.html); none when the run has no open-loop points."""
    found = curves(levels(records))
    if not found:
        return []
    intro = [Text("Open loop (bench/openloop.py): requests at a constant rate whether or not answers came back, each "
                  "one's latency from its intended send time (corrected for coordinated omission); uncorrected: "
                  "from when a closed-loop client could have sent it. Medians over the repeats. × overloaded "
                  "(latency grew through the run, or requests were left waiting); (gen) the generator, not the "
                  "server, set the pace (those points are left out of the curves and the SLO capacities).")]
    if text := paragraph(found):
        intro.append(Text(text))
    found_sections = [Section("Latency under a constant rate", intro)]
    for (workload, connections), servers in found.items():
        path = plot_path(plot_dir, workload, connections, "latency-load").relative_to(report_dir)
        found_sections.append(Section(f"{workload} at {connections} connections", [
            capacity_table(servers), Figure(f"{workload} latency–load", path.as_posix()), side_by_side(servers)],
            level=3))
    for connections in dict.fromkeys(c for _, c in found):
        tables = [t for t in (fast_table(found, connections), varied_table(found, connections)) if t]
        found_sections += [Section(t.title, [replace(t, title=None)], level=3) for t in tables]
    return found_sections
