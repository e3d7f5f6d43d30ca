"""A run's report: what it shows (bench.analysis.lessons), environment, one section per workload with a
generated verdict, tables (median [min–max]) and the plots, then its experiments and where the time goes;
built once as a Document and written as report.md and report.html (pure: the run in, text out)."""

from __future__ import annotations

import re
from pathlib import Path

from bench import subjects
from bench.analysis import experiments, html, latency, lessons, plots
from bench.analysis.document import (
    Block,
    Bullets,
    Document,
    Entry,
    Figure,
    Flame,
    Flames,
    Section,
    Table,
    Text,
    markdown,
    page_of,
)
from bench.analysis.metrics import FIGURES, TABLED
from bench.analysis.summary import Cell, flag_counts, median, remeasured, summarize
from bench.analysis.tables import CLIENT_BOUND_MARK, DISTURBED_MARK, ERRORS_MARK, flagged, number, table
from bench.config import DISTURBED_CPU_SHARE, SATURATED_CPU_SHARE, cpu_list
from bench.errors import BenchError
from bench.profiling import share_rows
from bench.profiling.offcpu import LABELS as OFF_CPU_LABELS
from bench.profiling.offcpu import off_cpu_breakdown, off_cpu_names
from bench.profiling.perf import SAMPLE_HZ
from bench.results import JSON_NAME, Profiling, Run, ServerProfile, load, write_atomic

SVG_HEIGHT = re.compile(rb'<svg[^>]*?\sheight="(\d+)')


def peak(cells: list[Cell], server: str) -> Cell | None:
    """The server's cell with the highest median requests/s."""
    measured = [c for c in cells if c.server == server and median(c, "requests_per_s") is not None]
    return max(measured, key=lambda c: median(c, "requests_per_s"), default=None)


def ranked_peaks(cells: list[Cell], *categories: str) -> list[Cell]:
    """Each server's peak among those of `categories`, highest requests/s first."""
    servers = dict.fromkeys(c.server for c in cells if subjects.category(c.server) in categories)
    return sorted((p for p in (peak(cells, s) for s in servers) if p is not None),
                  key=lambda c: median(c, "requests_per_s"), reverse=True)


def verdict(workload: str, cells: list[Cell]) -> str:
    """One sentence from the numbers: which model won, by how much, against the peers and the references,
    what was client-bound."""
    peaks = ranked_peaks(cells, "model", "user")
    if not peaks:
        return f"**{workload}**: no model under test produced a measurement."
    best = peaks[0]
    best_rps = median(best, "requests_per_s")
    text = (f"**{workload}**: {best.server} had the highest throughput, {number(best_rps)} requests/s "
            f"(median, at {best.connections} connections)")
    if len(peaks) > 1:
        second = peaks[1]
        overlap = best.stats["requests_per_s"].low <= second.stats["requests_per_s"].high
        text += (f", {best_rps / median(second, 'requests_per_s'):.2f}× the runner-up {second.server} "
                 f"({number(median(second, 'requests_per_s'))} at {second.connections}"
                 f"{'; a tie within the repeat spread' if overlap else ''})")
    for group in ("peer", "reference"):
        if found := ranked_peaks(cells, group):
            against = found[:1] if group == "peer" else found  # the best peer; every reference
            text += (f"; the {group}s peaked at " + ", ".join(f"{number(median(c, 'requests_per_s'))} ({c.server})"
                                                              for c in found)
                     + f", so {best.server} reached " + ", ".join(
                         f"{best_rps / median(c, 'requests_per_s'):.2f}× {c.server}" for c in against))
    measured = [c for c in cells if c.connections == best.connections and median(c, "cpu_us_per_request") is not None]
    same_load = [c for c in measured if subjects.category(c.server) != "reference"]
    if len(same_load) > 1:
        low = min(same_load, key=lambda c: median(c, "cpu_us_per_request"))
        high = max(same_load, key=lambda c: median(c, "cpu_us_per_request"))
        text += (f"; at {best.connections} connections server CPU per request ran from "
                 f"{median(low, 'cpu_us_per_request'):.1f} µs ({low.server}) to "
                 f"{median(high, 'cpu_us_per_request'):.1f} µs ({high.server})")
        if references := [c for c in measured if subjects.category(c.server) == "reference"]:
            text += ", against " + ", ".join(f"{median(c, 'cpu_us_per_request'):.1f} µs for the {c.server} reference "
                                             f"({subjects.get(c.server).model})" for c in references)
    bound = [f"{c.server}@{c.connections}" for c in cells if c.client_bound]
    disturbed = sum(c.disturbed > 0 for c in cells)
    return (text + f"; client-bound points: {', '.join(bound) if bound else 'none'}; "
            f"{disturbed} of {len(cells)} points disturbed by other load {DISTURBED_MARK}.")


def engine_line(e: dict) -> str:
    line = (f"`{e['engine']}`: host {e['host_name']}, daemon {e['daemon_id']}, kernel {e['kernel']}, "
            f"{e['cpus']} CPUs, Docker {e['docker']}")
    if e["api_version"] is None:  # recorded before schema 6
        return line
    return (f"{line} (API {e['api_version']}, containerd {e['containerd']}, runc {e['runc']}), cgroup "
            f"v{e['cgroup_version']} ({e['cgroup_driver']} driver), seccomp profile {e['seccomp_profile']}")


def environment_table(run: Run) -> Table:
    env, config = run.environment, run.config
    server_cpus, client_cpu = config["server_cpus"], config["client_cpu"]
    shared = " (shared with wrk)" if client_cpu in server_cpus else ""
    plural = "s" if len(server_cpus) > 1 else ""
    pins = f"server on CPU{plural} {cpu_list(server_cpus)}{shared}, wrk on CPU {client_cpu}"
    engines = env.get("engines", [])
    if config["server_engine"]:
        pins = f"server on CPU{plural} {cpu_list(server_cpus)} of its engine, each wrk on CPU {client_cpu} of its own"
    rows = {
        "kernel": env["kernel"], "OS": env["os"], "CPU": f"{env['cpu_model']} ({env['cpus']} CPUs)",
        "pinning": pins, "Python": env["python"], "pyroute2": env["pyroute2"],
        **env["tools"], "open-file limit": env["open_file_limit"]["soft"],
        **{f"client {key}": value for key, value in env.get("client_sysctls", {}).items()},
        "runner": env["runner"], "git commit": env["git_commit"],
        # The same engine may run two of the wrk: numbered rows.
        **{f"engine {i} ({e['role']})": engine_line(e) for i, e in enumerate(engines, 1)},
        **({"traffic counters": env["traffic"]} if "traffic" in env else {}),
    }
    if server_python := env.get("server_python"):  # absent from runs made before it was recorded
        gil = "enabled" if server_python["gil_enabled"] else "disabled"
        build = "free-threaded build" if server_python["free_threaded_build"] else "GIL build"
        rows["servers' Python"] = f"{server_python['version']} ({server_python['executable']}, {build}, GIL {gil})"
    return Table(["", ""], [[Entry(str(name)), Entry(str(value))] for name, value in rows.items()], align="ll")


def own_settings(config: dict) -> str:
    """What the preset chose for some workloads: fewer repeats, longer runs (absent from older runs)."""
    chosen: dict[str, list[str]] = {}
    for w in config["workloads"]:
        if (count := w.get("repeat")) and count < config["repeat"]:
            chosen.setdefault(f"{count} repeat(s)", []).append(w["name"])
        if (seconds := w.get("duration_s")) and seconds != config["duration_s"]:
            chosen.setdefault(f"{seconds} s", []).append(w["name"])
    if not chosen:
        return ""
    return (" (" + "; ".join(f"{setting} for {', '.join(names)}" for setting, names in chosen.items()) +
            ": the preset's choice, fewer repeats where the spread is small against the differences; a single "
            "repeat shows no spread)")


def method_line(run: Run) -> str:
    config = run.config
    return (f"Preset `{config['preset']}`: {config['repeat']} repeat(s) of {config['duration_s']} s per point"
            f"{own_settings(config)} after a {config['warmup_s']} s warm-up per connection count (not recorded); "
            f"wrk with "
            f"{config['wrk_threads']} thread(s), {config['wrk_timeout_s']} s timeout. Cells: median "
            f"[min–max] over the repeats. {CLIENT_BOUND_MARK} marks client-bound points: wrk used "
            f"≥{SATURATED_CPU_SHARE:.0%} of its CPU while the server used less than that of its own, "
            f"so the load generator set the pace; compare CPU per request there. {DISTURBED_MARK} marks "
            f"points where other processes on the machine used ≥{DISTURBED_CPU_SHARE} CPU during a repeat, "
            f"counted only while wrk ran; the container engine's work (the docker runner's cost of "
            f"running wrk) is not among them: it has its own table. {ERRORS_MARK} marks points where wrk "
            f"counted errors in a repeat. Each workload lists its flagged points with the evidence.")


# Flags every loaded host shows on many points: counted, marked in the tables, not listed one by one.
COUNTED_ONLY = ("disturbed", "client_bound")


def integrity(run: Run) -> Section:
    """The run's flags counted, what was measured again, wrk's share of the wall time, and every other flagged
    repeat with its evidence (bench/flags.py states the rules)."""
    counts = flag_counts(run.records)
    again = remeasured(run.records)
    text = (f"Flags on the standing repeats: {', '.join(f'{n} {name}' for name, n in counts.items()) or 'none'}. "
            f"Measured again (flagged disturbed or stalled, {run.config.get('remeasure', 0)} extra tries at most): "
            f"{again.points} repeat(s) in {again.attempts} extra attempt(s); {again.still_flagged} stayed flagged. "
            f"Stalled repeats and outliers (further from the median than 3.5 robust deviations and 25 %) are left "
            f"out of the statistics while a clean repeat remains, and drawn as crosses.")
    if run.efficiency:
        e = run.efficiency
        text += f" wrk ran {e['wrk_share']:.0%} of the sweep's wall time ({e['wrk_s']:.0f} of {e['wall_s']:.0f} s)."
    if run.resumed:
        text += " Resumed: " + "; ".join(
            f"{r['at']}{' (forced: ' + '; '.join(r['differences']) + ')' if r['forced'] else ''}" for r in run.resumed)
    section = Section("Integrity", [Text(text)])
    if listed := [r for r in run.records if set(r.flags) - set(COUNTED_ONLY)]:
        section.blocks.append(Table(["point", "attempt", "flags", "evidence"], [
            [Entry(f"{r.workload} {r.server} @ {r.connections} #{r.repeat}"),
             Entry(f"{r.attempt}{' (replaced)' if r.superseded_by else ''}", r.attempt), Entry(", ".join(r.flags)),
             Entry("; ".join(f"{k}: {v}" for k, v in r.flag_details.items() if k not in COUNTED_ONLY))]
            for r in listed], align="lrll"))
    return section


def document(run: Run, cells: list[Cell], plot_dir: Path, report_dir: Path) -> Document:
    """The whole report of one run, as data."""
    intro = [Text(f"Run {run.status}: started {run.started_at}, finished {run.finished_at or '—'}, "
                  f"{len(run.records)} records.")]
    sections = [lessons.section(lessons.lessons(run.records)),
                Section("Environment", [environment_table(run), Text(method_line(run))]), integrity(run)]
    for workload in run.config["workloads"]:
        workload_cells = [c for c in cells if c.workload == workload["name"]]
        if not workload_cells:
            continue
        section = Section(workload["name"], [
            Text(f"`GET {workload['path']}`, pipeline depth {workload['pipeline']}, "
                 f"{'Connection: close' if workload['close'] else 'keep-alive'}."),
            Text(verdict(workload["name"], workload_cells)),
            *(table(workload_cells, metric.key, title=metric.table) for metric in TABLED)])
        if flags := flagged(workload_cells):
            section.blocks += [Text("Flagged points:"), Bullets(flags)]
        if failures := [c for c in workload_cells if c.failed or c.unsupported]:
            section.blocks += [Text("Failed or unsupported points:"), Bullets([
                f"{c.server} @ {c.connections}: {f'{c.failed} failed' if c.failed else f'{c.unsupported} unsupported'}"
                f" — {c.failure}" for c in failures])]
        drawn = [*FIGURES, *(["histogram"] if plots.histograms(run.records, report_dir, workload["name"]) else [])]
        section.blocks += [Figure(f"{workload['name']} {figure}",
                                  plots.figure_path(plot_dir, workload["name"], figure).relative_to(report_dir)
                                  .as_posix()) for figure in drawn]
        sections.append(section)
    sections += experiments.sections(run.config["workloads"], cells, plot_dir, report_dir)
    sections += latency.sections(run.records, plot_dir, report_dir)
    if run.profiling:
        sections += where_the_time_goes(run.profiling, cells, plot_dir, report_dir)
    return Document(f"swissknife benchmark `{run.name}`", intro, sections)


def flame(label: str, path: Path, run_dir: Path) -> Flame:
    found = SVG_HEIGHT.search(path.read_bytes()[:2000]) if path.exists() else None
    return Flame(label, path.relative_to(run_dir).as_posix(), int(found.group(1)) if found else 600)


def where_the_time_goes(profiling: Profiling, cells: list[Cell], plot_dir: Path, run_dir: Path) -> list[Section]:
    section = Section("Where the time goes", [Text(
        f"One extra run per server and workload, not among the measured repeats: the server restarted with "
        f"perf support in its interpreter, wrk at the largest connection count, perf counting the server's "
        f"syscalls for {profiling.syscall_window_s:g} s, then sampling it (cpu-clock, {SAMPLE_HZ} Hz, DWARF "
        f"call graphs: kernel, C and Python frames) for {profiling.duration_s:g} s. Each sample counts in "
        f"the category of its leaf-most frame that matches one (patterns: `bench/profiling/breakdown.py`). "
        f"CPU µs/request is the measured repeats' median at that connection count; syscalls/request come "
        f"from the profiled run. Python frames: `perf_jit` (`-X perf_jit`, 3.13+) or `perf` (`-X perf`, "
        f"3.12+) name the servers' Python functions; `none` leaves them as interpreter C frames.")])
    if profiling.problem:
        section.blocks.append(Text(f"No profiles: {profiling.problem}."))
        return [section]
    found_sections = [section]
    by_key = {c.key: c for c in cells}
    for workload in plots.profiled_workloads(profiling):
        profiles = [p for p in profiling.profiles if p.workload == workload]
        rows = []
        for p in profiles:
            cell = by_key.get((p.workload, p.server, p.connections))
            cpu = median(cell, "cpu_us_per_request") if cell else None
            rows.append([Entry(p.server), Entry("—" if cpu is None else f"{cpu:.1f}", cpu),
                         Entry(f"{p.syscalls_per_request:.2f}" if p.syscalls_per_request is not None else "—",
                               p.syscalls_per_request),
                         Entry(p.python_method), Entry(f"[{p.svg}]({p.svg})" if p.svg else f"none ({p.status})")])
        here = Section(f"{workload} at {profiles[0].connections} connections", [Table(
            ["server", "CPU µs/request", "syscalls/request", "Python frames", "flame graph"], rows, align="lrrll")],
            level=3)
        if found := plots.breakdowns(profiling, run_dir, workload):
            labels, shares = share_rows(found)
            breakdown_png = plots.figure_path(plot_dir, workload, "breakdown").relative_to(run_dir)
            here.blocks += [Text("Share of the server's CPU samples:"),
                            Table(["server", *labels], [[Entry(server), *(Entry(f"{v:.1f}%", v) for v in values)]
                                                        for server, values in shares.items()]),
                            Figure(f"{workload} breakdown", breakdown_png.as_posix())]
        here.blocks.append(Flames([flame(p.server, run_dir / p.svg, run_dir) for p in profiles if p.svg]))
        diffs = [(before, after, plots.diff_path(run_dir, workload, before, after))
                 for before, after in plots.drawn_diffs(profiling, run_dir, workload)]
        if diffs:
            links = ", ".join(f"[{before} → {after}]({path.relative_to(run_dir)})" for before, after, path in diffs)
            here.blocks += [Text(f"Differential flame graphs (widths from the second server; red where it spends "
                                 f"more, blue where less): {links}."),
                            Flames([flame(f"{before} → {after}", path, run_dir) for before, after, path in diffs])]
        here.blocks += off_cpu_blocks(profiles, run_dir)
        if notes := [f"{p.server}: {note}" for p in profiles
                     for note in [p.message, *p.notes, p.syscalls_message, p.offcpu_message] if note]:
            here.blocks.append(Bullets(notes))
        found_sections.append(here)
    return found_sections

def off_cpu_blocks(profiles: list[ServerProfile], run_dir: Path) -> list[Block]:
    """Where the threads waited in the window after the sampling: a table of blocked time, the graphs, the
    hand-offs to waiting workers."""
    found = {p.server: off_cpu_breakdown(run_dir / p.offcpu_folded) for p in profiles if p.offcpu_folded}
    if not found:
        return []
    names = off_cpu_names()
    rows = []
    for server, breakdown in found.items():
        total = breakdown.total or 1
        shares = [100 * breakdown.weights.get(name, 0) / total for name in names]
        rows.append([Entry(server), Entry(f"{breakdown.total / 1e9:.2f}", breakdown.total / 1e9),
                     *(Entry(f"{share:.1f}%", share) for share in shares)])
    links = ", ".join(f"{p.server} [off-CPU]({p.offcpu_svg})" + (f" [on + off]({p.wall_svg})" if p.wall_svg else "")
                      for p in profiles if p.offcpu_svg)
    blocks: list[Block] = [
        Text("Where the threads waited (off-CPU, the window after the sampling: every context switch with its "
             "stack, weighted by the time until the thread ran again; categories: `bench/profiling/offcpu.py`):"),
        Table(["server", "blocked (thread-s)", *(OFF_CPU_LABELS[name] for name in names)], rows)]
    if links:
        blocks += [Text(f"Off-CPU and on + off flame graphs: {links}."),
                   Flames([flame(f"{p.server} off-CPU", run_dir / p.offcpu_svg, run_dir)
                           for p in profiles if p.offcpu_svg]
                          + [flame(f"{p.server} on + off", run_dir / p.wall_svg, run_dir)
                             for p in profiles if p.wall_svg])]
    handoffs = [f"{p.server} {h['mean']:.0f} µs mean, {h['p50']:.0f} µs median, {h['p99']:.0f} µs p99 "
                f"({h['count']:.0f} hand-offs)" for p in profiles if (h := p.handoff_us)]
    if handoffs:
        blocks.append(Text("A request's wait between the loop thread and a waiting worker (woken on its queue until "
                           f"it runs, the GIL wait straight after included; inside a container only that GIL wait: "
                           f"sched_wakeup names the woken thread by its host pid): {'; '.join(handoffs)}."))
    return blocks


def write_outputs(directory: Path) -> list[Path]:
    """Plots and report.md from directory/results.json alone."""
    run = load(directory)
    subjects.remember(run.config.get("subjects", []))
    cells = summarize(run.records)
    plot_dir = directory / "plots"
    paths = [*plots.draw_all(cells, plot_dir), *experiments.draw(run.config["workloads"], cells, plot_dir),
             *plots.draw_histograms(run.records, directory, plot_dir), *latency.draw(run.records, plot_dir)]
    if run.profiling:
        paths += plots.draw_profiles(run.profiling, directory, plot_dir)
    return [*paths, *write_pages(directory, document(run, cells, plot_dir, directory))]


def write_pages(directory: Path, found: Document) -> list[Path]:
    """report.md and report.html of one document."""
    write_atomic(directory / "report.md", markdown(found))
    write_atomic(directory / "report.html", html.page(found))
    return [directory / "report.md", directory / "report.html"]


def write_gil_report(directory: Path) -> list[Path]:
    """report.md comparing the runs in directory's subdirectories (python3 -m bench gil), from their results.json."""
    runs = [(run_dir, load(run_dir)) for run_dir in sorted(p.parent for p in directory.glob(f"*/{JSON_NAME}"))]
    found = [(run_dir, gil) for run_dir, run in runs if (gil := experiments.gil_run(run, run_dir)) is not None]
    if not found:
        raise BenchError(f"{directory} holds no run ({JSON_NAME}) and no `python3 -m bench gil` runs; "
                         f"python3 -m bench index {directory} lists the runs under it")
    intro, sections = experiments.gil_sections([gil for _, gil in found])
    runs_list = Bullets([f"[{gil.label}]({(page_of(run_dir) or run_dir).relative_to(directory).as_posix()})"
                         for run_dir, gil in found])
    return write_pages(directory, Document(f"swissknife GIL experiment `{directory.name}`", [Text(
        "Each run below is a full run with its own report; this page compares them at each run's largest "
        "connection count. CPU µs/request: median of the measured repeats; syscalls/request and the share "
        "of CPU samples in threads, locks and the GIL (futexes, GIL take/drop, mutexes, parking lots): from "
        "the one profiled run per server and workload (`bench/profiling/breakdown.py`)."), runs_list, *intro],
        sections))
