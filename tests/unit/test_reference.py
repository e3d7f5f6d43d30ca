"""results/README.md quotes results files, never hand-typed numbers: its reference table cell by cell, every
number of its prose from a claim computed here, and durations quoted as `N min (results/RUN)` anywhere in the
READMEs and the code are that run's wall time."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from bench.analysis import latency, plots
from bench.analysis.compare import wall_time_s
from bench.analysis.experiments import gil_run
from bench.analysis.summary import median, summarize
from bench.results import Run, load

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
README = RESULTS / "README.md"

# Table column heading -> (workload, connections) of the reference run
COLUMNS = [("plaintext", 16), ("plaintext", 256), ("sleep-5", 256), ("cpu-200", 256), ("idle-10000", 32), ("churn", 16)]
NUMBER_PAIR = re.compile(r"([\d,]+) / ([\d.]+)")
NUMBER = re.compile(r"\d{4}-\d\d-\d\d|\d(?:[\d,]*\d)?(?:\.\d+)*")  # a date, 1,234, 5.10, 3.13.5
DURATION = re.compile(r"(\d+) (s|min) \(results/([\w./-]+)\)")


@cache
def run(name: str) -> Run:
    return load(RESULTS / name)


@cache
def cells(name: str) -> dict:
    return {cell.key: cell for cell in summarize(run(name).records)}


def rps(workload: str, server: str, connections: int, name: str = "reference-docker") -> float:
    return median(cells(name)[(workload, server, connections)], "requests_per_s")


def cpu(workload: str, server: str, connections: int, name: str = "reference-docker") -> float:
    return median(cells(name)[(workload, server, connections)], "cpu_us_per_request")


def readme_table(heading: str) -> dict[str, list[str]]:
    """server -> its cells, from the first table under a heading of results/README.md."""
    text = README.read_text()
    table = text[text.index(heading):].split("\n\n| server |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        server, *row = (cell.strip() for cell in line.strip("|").split("|"))
        rows[server] = row
    return rows


def readme_rows() -> dict[str, list[str]]:
    """server -> its cells, from the table under the reference run's heading (bold and notes dropped)."""
    return {server.strip("*").split(" (")[0]: [cell.strip("*") for cell in row]
            for server, row in readme_table("## The published reference run").items()}


def test_every_quoted_number_is_the_reference_runs_median():
    rows = readme_rows()
    assert set(rows) == {"blocking", "threaded", "select", "poll", "epoll", "epoll-et", "epoll-pool", "asyncio",
                         "reuseport", "io-uring", "floor", "nginx"}
    quoted = 0
    for server, row in rows.items():
        assert len(row) == len(COLUMNS), (server, row)
        for text, (workload, connections) in zip(row, COLUMNS, strict=False):
            cell = cells("reference-docker")[(workload, server, connections)]
            if not (pair := NUMBER_PAIR.search(text.replace("*", ""))):
                assert median(cell, "requests_per_s") is None, (server, workload, text)  # failed/unsupported
                continue
            requests, cpu_text = pair.groups()
            assert requests == f"{median(cell, 'requests_per_s'):,.0f}", (server, workload, text)
            assert abs(float(cpu_text) - median(cell, "cpu_us_per_request")) < 0.051 * max(1, float(cpu_text) / 10), (
                server, workload, text, median(cell, "cpu_us_per_request"))
            quoted += 1
    assert quoted >= 50


PEERS_RUN = "2026-12-03/subjects"
PEER_COLUMNS = [("plaintext", 16), ("plaintext", 256), ("sleep-5", 256), ("cpu-200", 256)]


def peer_claims() -> list[str]:
    """The phrases of the peers' section, from the subjects run."""
    ok = [r for r in run(PEERS_RUN).records if r.status == "ok"]

    def at(server: str, workload: str = "plaintext", connections: int = 16) -> float:
        return cpu(workload, server, connections, PEERS_RUN)

    def served(server: str) -> str:
        return f"{rps('sleep-5', server, 256, PEERS_RUN):,.0f}"

    epoll, uvicorn, granian, gthread, gevent, pool = (at(s) for s in (
        "epoll", "uvicorn", "granian", "gunicorn-gthread", "gunicorn-gevent", "epoll-pool"))
    return [
        f"{sum(r.disturbed for r in ok)} of its {len(ok)} measured points",
        f"epoll {epoll:.1f} µs, uvicorn {uvicorn:.1f} ({uvicorn / epoll:.1f}×), granian {granian:.1f} "
        f"({granian / epoll:.1f}×), gunicorn-gthread {gthread:.0f} ({gthread / epoll:.0f}×)",
        f"{gthread - gevent:.0f} µs per request more than gunicorn-gevent ({gthread:.0f} against {gevent:.0f})",
        f"({pool - epoll:.0f} µs: {pool:.1f} against {epoll:.1f})",
        f"gunicorn-gthread {served('gunicorn-gthread')}, epoll-pool {served('epoll-pool')} requests/s",
        f"gunicorn-gevent served {served('gunicorn-gevent')} requests/s against epoll's {served('epoll')}, "
        f"uvicorn's {served('uvicorn')} and threaded's {served('threaded')}",
    ]


def test_the_peers_table_is_the_subjects_runs_medians():
    rows = readme_table("## The peers beside the models")
    assert set(rows) == set(run(PEERS_RUN).config["servers"])
    peers = {"uvicorn", "granian", "gunicorn-sync", "gunicorn-gthread", "gunicorn-gevent", "aiohttp", "tornado"}
    assert peers <= set(rows)
    for server, row in rows.items():
        for text_cell, (workload, connections) in zip(row, PEER_COLUMNS, strict=True):
            cell = cells(PEERS_RUN)[(workload, server, connections)]
            if (requests := median(cell, "requests_per_s")) is None:
                assert text_cell == "—", (server, workload, text_cell)
                continue
            per_request = median(cell, "cpu_us_per_request")
            assert text_cell == f"{requests:,.0f} / {per_request:.1f}" if per_request < 100 else \
                text_cell == f"{requests:,.0f} / {per_request:,.0f}", (server, workload, text_cell)


LATENCY_RUN = "2026-12-03/latency"
LATENCY_CONNECTIONS = 32
RATES = ("5000/s", "20000/s")  # the default absolute rates, offered to every workload alike


@cache
def latency_levels() -> dict[str, dict[str, list[latency.Level]]]:
    """workload -> server -> its open-loop levels, as the run's report folds them."""
    found = latency.curves(latency.levels(run(LATENCY_RUN).records))
    return {workload: servers for (workload, connections), servers in found.items()
            if connections == LATENCY_CONNECTIONS}


def level(workload: str, server: str, asked: str) -> latency.Level | None:
    found = [lv for lv in latency_levels()[workload].get(server, []) if lv.rate_asked == asked]
    return found[0] if found else None  # floor and nginx have no /sleep or /cpu: no mix


def fast_p99(workload: str, server: str, asked: str) -> str:
    """The fast route's p99: alone (plaintext) or in a mix; × overloaded, (gen) generator-bound."""
    if (lv := level(workload, server, asked)) is None:
        return "—"
    return latency.ms_entry(lv.figures["latency_p99_us"] if workload == latency.PLAIN else lv.fast_p99_us, lv).text


MIXES = (latency.PLAIN, "latency-mix-sleep", "latency-mix-cpu")


def latency_rows() -> dict[str, list[str]]:
    """server -> its cells of results/README.md's latency table, from the latency run."""
    rows = {}
    for server, plain in latency_levels()[latency.PLAIN].items():
        rows[server] = [latency.rate(latency.capacity(plain, 1_000)), latency.rate(latency.capacity(plain, 10_000)),
                        latency.rate(latency.peak(plain)),
                        *(fast_p99(w, server, asked) for asked in RATES for w in MIXES),
                        *(latency.cpu(level(w, server, RATES[-1])).text for w in (latency.PLAIN, latency.VARIED))]
    return rows


def latency_claims() -> list[str]:
    """The phrases of results/README.md's latency prose, from the latency run."""
    plain = latency_levels()[latency.PLAIN]

    def held(server: str) -> str:
        return latency.rate(latency.capacity(plain[server], 10_000))

    def p99(workload: str, server: str, asked: str) -> str:
        return fast_p99(workload, server, asked).removesuffix(" ×")

    def us(workload: str, server: str) -> str:
        return latency.cpu(level(workload, server, RATES[-1])).text

    sleep, cpu_mix = MIXES[1:]
    blocking = level(latency.PLAIN, "blocking", RATES[0])
    return [
        f"(epoll to {held('epoll')} requests/s, io-uring to {held('io-uring')}); epoll-pool to "
        f"{held('epoll-pool')}, threaded to {held('threaded')}",
        f"(p99 {latency.ms(blocking.figures['latency_p99_us'])} ms, the timeout)",
        f"wrk's closed loop measured {latency.rate(latency.peak(plain['blocking']))} requests/s",
        f"(epoll {p99(latency.PLAIN, 'epoll', RATES[0])} ms at 5,000/s, {p99(latency.PLAIN, 'epoll', RATES[1])} at "
        f"20,000/s)",
        f"p99 {p99(sleep, 'epoll', RATES[0])} ms for epoll",
        f"epoll-pool {p99(sleep, 'epoll-pool', RATES[0])}, threaded {p99(sleep, 'threaded', RATES[0])}, reuseport "
        f"{p99(sleep, 'reuseport', RATES[0])}",
        f"(epoll {p99(sleep, 'epoll', RATES[1])} ms), reuseport too ({p99(sleep, 'reuseport', RATES[1])}), while "
        f"epoll-pool held {p99(sleep, 'epoll-pool', RATES[1])} and threaded {p99(sleep, 'threaded', RATES[1])} ms",
        f"epoll {p99(cpu_mix, 'epoll', RATES[1])}, io-uring {p99(cpu_mix, 'io-uring', RATES[1])} ms",
        f"threaded {p99(cpu_mix, 'threaded', RATES[1])}, epoll-pool {p99(cpu_mix, 'epoll-pool', RATES[1])} ms",
        f"epoll {us(latency.PLAIN, 'epoll')} → {us(latency.VARIED, 'epoll')} µs, threaded "
        f"{us(latency.PLAIN, 'threaded')} → {us(latency.VARIED, 'threaded')}, nginx {us(latency.PLAIN, 'nginx')} → "
        f"{us(latency.VARIED, 'nginx')}",
        f"({held('epoll-pool')} against epoll's {held('epoll')} requests/s",
    ]


def test_the_latency_table_is_the_latency_runs_medians():
    assert readme_table("## Latency under a constant rate") == latency_rows()


def claims() -> list[str]:
    """Each phrase of results/README.md's prose that holds a number, written from the results files."""
    reference = run("reference-docker")
    status = [r.status for r in reference.records]
    profile = run("reference-docker/profile")
    syscalls = {p.server: p.syscalls_per_request for p in profile.profiling.profiles}
    shares = {server: found.shares() for server, found in
              plots.breakdowns(profile.profiling, RESULTS / "reference-docker" / "profile", "plaintext").items()}
    gil = {(g.gil, g.cpus): g.figures for d in sorted((RESULTS / "2026-12-01" / "gil").glob("*/results.json"))
           if (g := gil_run(load(d.parent), d.parent))}
    bad_repeat = next(r for r in reference.records if (r.workload, r.server, r.repeat) == ("idle-5000", "epoll", 3))
    process, docker = (cells(f"2026-12-01/runners-{name}") for name in ("process", "docker"))
    shared = [(a.stats["cpu_us_per_request"], docker[key].stats["cpu_us_per_request"]) for key, a in process.items()
              if key in docker and a.stats["cpu_us_per_request"]]
    overlapping = sum(a.low <= b.high and b.low <= a.high for a, b in shared)
    pool, epoll = cpu("plaintext", "epoll-pool", 16), cpu("plaintext", "epoll", 16)
    return [
        f"{len(status)} records", f"{status.count('ok')} measured, {status.count('failed')} failed, "
                                  f"{status.count('unsupported')} unsupported",
        f"wrk counted {bad_repeat.errors_timeout} timeouts",
        f"reported {bad_repeat.duration_s:.1f} s for a",
        f"({bad_repeat.requests:,} requests, {bad_repeat.server_cpu_user_s + bad_repeat.server_cpu_sys_s:.1f} s of "
        f"server CPU) by {bad_repeat.duration_s:.1f} s",
        f"its {rps('plaintext', 'blocking', 16):,.0f} requests/s at 16 connections",
        f"{rps('plaintext', 'epoll-pool', 16):,.0f}\n  requests/s "
        f"({rps('plaintext', 'epoll-pool', 16) / rps('plaintext', 'blocking', 16):.2f}×)",
        f"epoll-pool still does {rps('idle-10000', 'epoll-pool', 32):,.0f} requests/s",
        f"{rps('sleep-5', 'epoll-pool', 256):,.0f} against {rps('sleep-5', 'blocking', 256):,.0f}\n  requests/s at "
        f"256 connections ({rps('sleep-5', 'epoll-pool', 256) / rps('sleep-5', 'blocking', 256):.1f}×)",
        f"{rps('sleep-5', 'threaded', 256):,.0f} requests/s",
        f"{pool / epoll:.2f}× the CPU per request\n  ({pool:.1f} against {epoll:.2f} µs at 16 connections)",
        f"({rps('plaintext', 'epoll-pool', 16):,.0f} against {rps('plaintext', 'epoll', 16):,.0f} requests/s)",
        f"{syscalls['epoll-pool']:.2f} syscalls\n  per request against epoll's {syscalls['epoll']:.2f}",
        f"{shares['epoll-pool']['locks']:.1f} % of epoll-pool's CPU samples in\n  threads, locks and the GIL against "
        f"epoll's {shares['epoll']['locks']:.1f} %",
        f"({rps('cpu-200', 'epoll-pool', 256):,.0f}\n  against {rps('cpu-200', 'epoll', 256):,.0f} requests/s)",
        f"{cpu('churn', 'epoll-pool', 16) / cpu('churn', 'blocking', 16):.2f}× the blocking server's CPU per request "
        f"({cpu('churn', 'epoll-pool', 16):.1f}\n  against {cpu('churn', 'blocking', 16):.1f} µs)",
        f"{epoll / cpu('plaintext', 'nginx', 16):.2f}× nginx's CPU per request and "
        f"{epoll / cpu('plaintext', 'floor', 16):.2f}× the floor's ({epoll:.2f} against "
        f"{cpu('plaintext', 'nginx', 16):.2f}\nand {cpu('plaintext', 'floor', 16):.2f} µs at 16 connections)",
        f"from {gil[True, 1]['plaintext', 'epoll-pool'].lock_share:.1f} % to "
        f"{gil[False, 1]['plaintext', 'epoll-pool'].lock_share:.1f} %",
        f"({gil[False, 1]['plaintext', 'epoll-pool'].requests_per_s:,.0f} against\n"
        f"{gil[False, 1]['plaintext', 'epoll'].requests_per_s:,.0f} requests/s)",
        f"({gil[True, 2]['plaintext', 'epoll-pool'].requests_per_s:,.0f} requests/s, "
        f"{gil[True, 2]['plaintext', 'epoll-pool'].lock_share:.1f} % of its samples in locks; without the\n"
        f"GIL {gil[False, 2]['plaintext', 'epoll-pool'].requests_per_s:,.0f})",
        f"({rps('idle-0', 'epoll', 32):,.0f} → {rps('idle-10000', 'epoll', 32):,.0f} requests/s)",
        f"({rps('idle-0', 'poll', 32):,.0f} → {rps('idle-10000', 'poll', 32):,.0f} requests/s, "
        f"{cpu('idle-0', 'poll', 32):.2f} → {cpu('idle-10000', 'poll', 32):.1f} µs per request",
        f"(at\n  100,000: reuseport {rps('idle-100000', 'reuseport', 32):,.0f}, nginx "
        f"{rps('idle-100000', 'nginx', 32):,.0f} requests/s)",
        f"epoll spends {shares['epoll']['network']:.1f} % of its samples\n  in the kernel's socket and network stack, "
        f"{shares['epoll']['multiplexing']:.1f} % in epoll and {shares['epoll']['python']:.1f} % in Python;\n  the "
        f"floor {shares['floor']['network']:.1f} %, {shares['floor']['multiplexing']:.1f} % and "
        f"{shares['floor']['python']:.1f} %",
        f"overlap in {overlapping} of\n  {len(shared)} cells",
        *peer_claims(),
        *latency_claims(),
    ]


def test_every_number_in_the_prose_of_results_readme_is_computed_from_the_run_it_names():
    text = README.read_text()
    covered = [False] * len(text)
    for phrase in claims():
        assert phrase in text, f"results/README.md no longer says: {phrase!r}"
        for found in re.finditer(re.escape(phrase), text):
            covered[found.start():found.end()] = [True] * len(phrase)
    for found in DURATION.finditer(text):
        covered[found.start():found.end()] = [True] * (found.end() - found.start())
    reference = run("reference-docker")
    config, env = reference.config, reference.environment
    # What the prose names besides measurements: the run's settings and routes, its tools' versions, its CPUs.
    settings = {str(n) for n in (*config["connections"], config["repeat"], config["duration_s"], *config["server_cpus"],
                                 config["client_cpu"], env["cpus"], 64)}  # 64: the profile run's connections
    settings |= {f"{int(w['name'].split('-')[1]):,}" for w in config["workloads"] if w["name"].startswith("idle-")}
    settings |= {str(n) for w in config["workloads"] for n in w["connections"] or ()}
    settings |= {f"{int(n):,}" for w in config["workloads"] for n in re.findall(r"\d+", w["path"])}
    settings |= {env["python"], env["tools"]["nginx"], env["tools"]["wrk"], ".".join(env["kernel"].split(".")[:2])}
    settings |= {"1,024", "2026-12-01"}  # FD_SETSIZE; the round's folder
    # The latency run's absolute rates, the percentile and the SLOs its report judges by.
    settings |= {f"{r['value']:,.0f}" for r in run(LATENCY_RUN).config["rates"] if not r["fraction"]}
    settings |= {"99", *(f"{slo / 1e3:g}" for slo in latency.SLOS_US)}
    loose = []
    for line in re.finditer(r"^(?!\|).*$", text, re.M):  # table rows are the other test's
        body = re.sub(r"\]\([^)]*\)|`[^`]*`", lambda m: " " * len(m.group()), line.group())  # links, code
        for number in NUMBER.finditer(body):
            start = line.start() + number.start()
            if not all(covered[start:start + len(number.group())]) and number.group() not in settings:
                loose.append(number.group())
    assert not loose, f"numbers in results/README.md that no results file backs: {loose}"


def test_durations_quoted_in_the_readmes_and_the_code_are_the_runs_wall_times():
    sources = [ROOT / "README.md", README, *sorted((ROOT / "bench").rglob("*.py"))]
    quoted = 0
    for source in sources:
        for seconds, unit, name in DURATION.findall(source.read_text()):
            wall = wall_time_s(run(name))
            assert int(seconds) == round(wall / 60 if unit == "min" else wall), (source, seconds, unit, name, wall)
            quoted += 1
    assert quoted >= 5
    c100k = next(r for r in run("2026-12-01/c100k").records
                 if (r.workload, r.server, r.status) == ("idle-100000", "reuseport", "ok"))
    holder = (ROOT / "bench" / "holder.py").read_text()
    assert f"over seven {c100k.idle_open_s:.1f} s (results/2026-12-01/c100k" in holder


def test_the_readmes_link_files_that_exist():
    for readme in (ROOT / "README.md", README):
        targets = re.findall(r"\]\(([^)#\s]+)\)", readme.read_text())
        assert "reference-docker/report.html" in " ".join(targets), readme  # the published page, linked
        missing = [t for t in targets if "://" not in t and not (readme.parent / t).exists()]
        assert not missing, (readme, missing)
