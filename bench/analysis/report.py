"""report.md of a run: environment, one section per workload with a generated verdict,
tables (median [min–max]) and the plots (pure: the run in, text out)."""

from __future__ import annotations

from pathlib import Path

from bench import subjects
from bench.analysis import experiments, plots
from bench.analysis.metrics import FIGURES, TABLED
from bench.analysis.summary import Cell, median, summarize
from bench.analysis.tables import CLIENT_BOUND_MARK, DISTURBED_MARK, number, table
from bench.config import DISTURBED_CPU_SHARE, SATURATED_CPU_SHARE, cpu_list
from bench.errors import BenchError
from bench.profiling import markdown_table
from bench.profiling.offcpu import off_cpu_breakdown, off_cpu_table
from bench.profiling.perf import SAMPLE_HZ
from bench.results import JSON_NAME, Profiling, Run, ServerProfile, load, write_atomic


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
            top = median(found[0], "requests_per_s")
            text += (f"; the {group}s peaked at " + ", ".join(f"{number(median(c, 'requests_per_s'))} ({c.server})"
                                                              for c in found)
                     + f", so {best.server} reached {best_rps / top:.2f}× {found[0].server}")
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


def environment_lines(run: Run) -> list[str]:
    env, config = run.environment, run.config
    server_cpus, client_cpu = config["server_cpus"], config["client_cpu"]
    shared = " (shared with wrk)" if client_cpu in server_cpus else ""
    plural = "s" if len(server_cpus) > 1 else ""
    pins = f"server on CPU{plural} {cpu_list(server_cpus)}{shared}, wrk on CPU {client_cpu}"
    engines = env.get("engines", [])
    if engines:
        pins = f"server on CPU{plural} {cpu_list(server_cpus)} of its engine, each wrk on CPU {client_cpu} of its own"
    rows = {
        "kernel": env["kernel"], "OS": env["os"], "CPU": f"{env['cpu_model']} ({env['cpus']} CPUs)",
        "pinning": pins, "Python": env["python"], "pyroute2": env["pyroute2"],
        **env["tools"], "open-file limit": env["open_file_limit"]["soft"],
        **{f"client {key}": value for key, value in env.get("client_sysctls", {}).items()},
        "runner": env["runner"], "git commit": env["git_commit"],
        # The same engine may run two of the wrk: numbered rows.
        **{f"engine {i} ({e['role']})": f"`{e['engine']}`: host {e['host_name']}, daemon {e['daemon_id']}, "
           f"kernel {e['kernel']}, {e['cpus']} CPUs, Docker {e['docker']}" for i, e in enumerate(engines, 1)},
        **({"traffic counters": env["traffic"]} if "traffic" in env else {}),
    }
    if server_python := env.get("server_python"):  # absent from runs made before it was recorded
        gil = "enabled" if server_python["gil_enabled"] else "disabled"
        build = "free-threaded build" if server_python["free_threaded_build"] else "GIL build"
        rows["servers' Python"] = f"{server_python['version']} ({server_python['executable']}, {build}, GIL {gil})"
    return ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows.items())]


def method_line(run: Run) -> str:
    config = run.config
    return (f"Preset `{config['preset']}`: {config['repeat']} repeat(s) of {config['duration_s']} s per point "
            f"after a {config['warmup_s']} s warm-up per connection count (not recorded); wrk with "
            f"{config['wrk_threads']} thread(s), {config['wrk_timeout_s']} s timeout. Cells: median "
            f"[min–max] over the repeats. {CLIENT_BOUND_MARK} marks client-bound points: wrk used "
            f"≥{SATURATED_CPU_SHARE:.0%} of its CPU while the server used less than that of its own, "
            f"so the load generator set the pace; compare CPU per request there. {DISTURBED_MARK} marks "
            f"points where other processes on the machine used ≥{DISTURBED_CPU_SHARE} CPU during a repeat, "
            f"counted only while wrk ran; the container engine's work (the docker runner's cost of "
            f"running wrk) is not among them: it has its own table.")


def render(run: Run, cells: list[Cell], plot_dir: Path, report_dir: Path) -> str:
    lines = [f"# swissknife benchmark `{run.name}`", "",
             f"Run {run.status}: started {run.started_at}, finished {run.finished_at or '—'}, "
             f"{len(run.records)} records.", "", "## Environment", "", *environment_lines(run), "",
             method_line(run), ""]
    for workload in run.config["workloads"]:
        workload_cells = [c for c in cells if c.workload == workload["name"]]
        if not workload_cells:
            continue
        lines += [f"## {workload['name']}", "",
                  f"`GET {workload['path']}`, pipeline depth {workload['pipeline']}, "
                  f"{'Connection: close' if workload['close'] else 'keep-alive'}.", "",
                  verdict(workload["name"], workload_cells), ""]
        for metric in TABLED:
            lines += [f"### {metric.table}", "", *table(workload_cells, metric.key), ""]
        failures = [c for c in workload_cells if c.failed or c.unsupported]
        if failures:
            lines += ["Failed or unsupported points:", ""]
            lines += [f"- {c.server} @ {c.connections}: "
                      f"{f'{c.failed} failed' if c.failed else f'{c.unsupported} unsupported'} — {c.failure}"
                      for c in failures]
            lines.append("")
        for figure in FIGURES:
            path = plots.figure_path(plot_dir, workload["name"], figure).relative_to(report_dir)
            lines += [f"![{workload['name']} {figure}]({path.as_posix()})", ""]
    lines += experiments.sections(run.config["workloads"], cells, plot_dir, report_dir)
    if run.profiling:
        lines += where_the_time_goes(run.profiling, cells, plot_dir, report_dir)
    return "\n".join(lines)


def where_the_time_goes(profiling: Profiling, cells: list[Cell], plot_dir: Path, run_dir: Path) -> list[str]:
    lines = ["## Where the time goes", "",
             f"One extra run per server and workload, not among the measured repeats: the server restarted with "
             f"perf support in its interpreter, wrk at the largest connection count, perf counting the server's "
             f"syscalls for {profiling.syscall_window_s:g} s, then sampling it (cpu-clock, {SAMPLE_HZ} Hz, DWARF "
             f"call graphs: kernel, C and Python frames) for {profiling.duration_s:g} s. Each sample counts in "
             f"the category of its leaf-most frame that matches one (patterns: `bench/profiling/breakdown.py`). "
             f"CPU µs/request is the measured repeats' median at that connection count; syscalls/request come "
             f"from the profiled run. Python frames: `perf_jit` (`-X perf_jit`, 3.13+) or `perf` (`-X perf`, "
             f"3.12+) name the servers' Python functions; `none` leaves them as interpreter C frames.", ""]
    if profiling.problem:
        return lines + [f"No profiles: {profiling.problem}.", ""]
    by_key = {c.key: c for c in cells}
    for workload in plots.profiled_workloads(profiling):
        profiles = [p for p in profiling.profiles if p.workload == workload]
        lines += [f"### {workload} at {profiles[0].connections} connections", "",
                  "| server | CPU µs/request | syscalls/request | Python frames | flame graph |",
                  "|---|---:|---:|---|---|"]
        for p in profiles:
            cell = by_key.get((p.workload, p.server, p.connections))
            cpu = median(cell, "cpu_us_per_request") if cell else None
            syscalls = f"{p.syscalls_per_request:.2f}" if p.syscalls_per_request is not None else "—"
            graph = f"[{p.svg}]({p.svg})" if p.svg else f"none ({p.status})"
            lines.append(f"| {p.server} | {'—' if cpu is None else f'{cpu:.1f}'} | {syscalls} | "
                         f"{p.python_method} | {graph} |")
        lines.append("")
        if found := plots.breakdowns(profiling, run_dir, workload):
            breakdown_png = plots.figure_path(plot_dir, workload, "breakdown").relative_to(run_dir)
            lines += ["Share of the server's CPU samples:", "", markdown_table(found),
                      f"![{workload} breakdown]({breakdown_png.as_posix()})", ""]
        diffs = [f"[{before} → {after}]({plots.diff_path(run_dir, workload, before, after).relative_to(run_dir)})"
                 for before, after in plots.drawn_diffs(profiling, run_dir, workload)]
        if diffs:
            lines += [f"Differential flame graphs (widths from the second server; red where it spends more, "
                      f"blue where less): {', '.join(diffs)}.", ""]
        lines += off_cpu_lines(profiles, run_dir)
        notes = [f"- {p.server}: {note}" for p in profiles
                 for note in [p.message, *p.notes, p.syscalls_message, p.offcpu_message] if note]
        lines += [*notes, ""] if notes else []
    return lines


def off_cpu_lines(profiles: list[ServerProfile], run_dir: Path) -> list[str]:
    """Where the threads waited in the window after the sampling: a table of blocked time, the graphs, the
    hand-offs to waiting workers."""
    found = {p.server: off_cpu_breakdown(run_dir / p.offcpu_folded) for p in profiles if p.offcpu_folded}
    if not found:
        return []
    graphs = ", ".join(f"{p.server} [off-CPU]({p.offcpu_svg})" + (f" [on + off]({p.wall_svg})" if p.wall_svg else "")
                       for p in profiles if p.offcpu_svg)
    lines = ["Where the threads waited (off-CPU, the window after the sampling: every context switch with its "
             "stack, weighted by the time until the thread ran again; categories: `bench/profiling/offcpu.py`):",
             "", off_cpu_table(found), f"Off-CPU and on + off flame graphs: {graphs}.", ""]
    handoffs = [f"{p.server} {h['mean']:.0f} µs mean, {h['p50']:.0f} µs median, {h['p99']:.0f} µs p99 "
                f"({h['count']:.0f} hand-offs)" for p in profiles if (h := p.handoff_us)]
    if handoffs:
        lines += ["A request's wait between the loop thread and a waiting worker (woken on its queue until it "
                  f"runs, the GIL wait straight after included): {'; '.join(handoffs)}.", ""]
    return lines



def write_outputs(directory: Path) -> list[Path]:
    """Plots and report.md from directory/results.json alone."""
    run = load(directory)
    subjects.remember(run.config.get("subjects", []))
    cells = summarize(run.records)
    plot_dir = directory / "plots"
    paths = plots.draw_all(cells, plot_dir) + experiments.draw(run.config["workloads"], cells, plot_dir)
    if run.profiling:
        paths += plots.draw_profiles(run.profiling, directory, plot_dir)
    write_atomic(directory / "report.md", render(run, cells, plot_dir, directory))
    return [*paths, directory / "report.md"]


def write_gil_report(directory: Path) -> list[Path]:
    """report.md comparing the runs in directory's subdirectories (python3 -m bench gil), from their results.json."""
    runs = [(run_dir, load(run_dir)) for run_dir in sorted(p.parent for p in directory.glob(f"*/{JSON_NAME}"))]
    if not runs:
        raise BenchError(f"{directory} holds no results.json, nor subdirectories with one")
    found = [(run_dir, gil) for run_dir, run in runs if (gil := experiments.gil_run(run, run_dir)) is not None]
    lines = [f"# swissknife GIL experiment `{directory.name}`", "",
             "Each run below is a full run with its own report; this page compares them at each run's largest "
             "connection count. CPU µs/request: median of the measured repeats; syscalls/request and the share "
             "of CPU samples in threads, locks and the GIL (futexes, GIL take/drop, mutexes, parking lots): from "
             "the one profiled run per server and workload (`bench/profiling/breakdown.py`).", "",
             *(f"- [{gil.label}]({run_dir.relative_to(directory).as_posix()}/report.md)" for run_dir, gil in found),
             "", *experiments.gil_sections([gil for _, gil in found])]
    write_atomic(directory / "report.md", "\n".join(lines))
    return [directory / "report.md"]
