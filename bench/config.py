"""What a sweep measures, as data: workloads, size presets, and the points of a run."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby

from bench import subjects

# A point is client-bound when wrk used at least this share of its CPU while
# the server used less than this share of its own: the load generator, not the
# server, set the throughput.
SATURATED_CPU_SHARE = 0.9
# Other processes on the machine used at least this many CPUs' worth during a
# run: the point was disturbed (the shared 2-core hosts see this often).
DISTURBED_CPU_SHARE = 0.1


@dataclass(frozen=True)
class Workload:
    name: str
    path: str
    pipeline: int = 1  # requests written per send
    close: bool = False  # `Connection: close` on every request: accept + close per request (churn)
    idle: int = 0  # idle keep-alive connections held open beside wrk's active ones (C10K)
    connections: tuple[int, ...] | None = None  # a fixed active set, instead of the sweep's counts
    # Open-loop load (bench/openloop.py): requests at the sweep's --rates, `mix` (percent, path) in a seeded
    # random order (empty: `path` alone), and `vary` ("header" or "query") making every request differ.
    open_loop: bool = False
    mix: tuple[tuple[float, str], ...] = ()
    vary: str | None = None
    # A preset's choices for this workload: fewer repeats than the sweep's (where the spread allows), a longer
    # measured run (where a short one would see nothing).
    repeat: int | None = None
    duration_s: int | None = None

    @property
    def route(self) -> str:
        """The route class of its path, as subjects declare what they serve: /, /bytes/N, /sleep/MS, /cpu/US."""
        return route_of(self.path)

    @property
    def routes(self) -> tuple[str, ...]:
        """The route classes of every path it sends."""
        return tuple(dict.fromkeys(route_of(path) for _, path in self.mix)) or (self.route,)

    @property
    def body_size(self) -> int | None:
        """Exact response length for /bytes/N, else None."""
        prefix = "/bytes/"
        return int(self.path[len(prefix):]) if self.path.startswith(prefix) else None


def route_of(path: str) -> str:
    name, _, argument = path[1:].partition("/")
    return f"/{name}/{subjects.ROUTES_ARGUMENTS.get(name, argument)}" if argument else path


IDLE_ACTIVE_CONNECTIONS = (32,)  # the small busy set wrk drives while the idle ones wait
# 50,000 and 100,000 pass one process's open-file limit (20,000 on our hosts): only the multi-process
# models (reuseport, nginx) are run there, the others are recorded unsupported with that reason.
IDLE_COUNTS = (0, 1000, 5000, 10000, 50000, 100000)


LATENCY_CONNECTIONS = (32,)


def idle_workload(count: int) -> Workload:
    return Workload(f"idle-{count}", "/", idle=count, connections=IDLE_ACTIVE_CONNECTIONS)


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("plaintext", "/"),
    Workload("pipeline-16", "/", pipeline=16),
    Workload("pipeline-64", "/", pipeline=64),
    Workload("bytes-64k", "/bytes/65536"),
    Workload("bytes-1m", "/bytes/1048576"),
    Workload("sleep-5", "/sleep/5"),
    Workload("cpu-200", "/cpu/200"),
    Workload("churn", "/", close=True),
    *(idle_workload(k) for k in IDLE_COUNTS),
    # Open loop, at one connection count (the rates are the axis): the fast requests alone, each one different,
    # and with 1 % slow ones (a blocking backend, a CPU-bound handler) that a single loop serves in line.
    Workload("latency-plaintext", "/", connections=LATENCY_CONNECTIONS, open_loop=True),
    Workload("latency-varied", "/", connections=LATENCY_CONNECTIONS, open_loop=True, vary="header"),
    Workload("latency-mix-sleep", "/", connections=LATENCY_CONNECTIONS, open_loop=True,
             mix=((99.0, "/"), (1.0, "/sleep/20"))),
    Workload("latency-mix-cpu", "/", connections=LATENCY_CONNECTIONS, open_loop=True,
             mix=((99.0, "/"), (1.0, "/cpu/2000"))),
)}


def workload(name: str) -> Workload | None:
    """A named workload; `idle-K` for any K (tests and small hosts choose their own K)."""
    if name in WORKLOADS:
        return WORKLOADS[name]
    prefix, _, count = name.partition("-")
    return idle_workload(int(count)) if prefix == "idle" and count.isdigit() else None


@dataclass(frozen=True)
class Experiment:
    """Workloads that together show one difference between the models."""

    name: str
    question: str
    workloads: tuple[str, ...]  # shell-style patterns: "idle-*" takes any idle-K of the run
    axis: str = "connections"  # what the experiment's plot puts on x: "connections" or a Workload field
    servers: tuple[str, ...] | None = None  # the models it compares, when not every one (and no --servers)
    across_runs: bool = False  # compares whole runs (bench gil): one run's report has no section of it

    def includes(self, workload_name: str) -> bool:
        return any(fnmatch.fnmatchcase(workload_name, pattern) for pattern in self.workloads)

    def default_workloads(self) -> list[str]:
        return [name for name in WORKLOADS if self.includes(name)]


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment("idle-connections", "How does each model cope with many idle connections beside a small active set?",
               ("idle-*",), axis="idle"),
    Experiment("pipelining", "How much does each model gain when requests arrive several per read?",
               ("plaintext", "pipeline-16", "pipeline-64"), axis="pipeline"),
    Experiment("blocking-handler", "Which models keep serving while a handler blocks (a slow backend)?",
               ("sleep-5",)),
    Experiment("cpu-handler", "What does a CPU-bound handler cost each model, and who can use more than one "
               "core (processes can; the GIL keeps threads to one)? Give the server several: --cpus 0-1,1",
               ("cpu-200",)),
    Experiment("large-responses", "How do the models stream large bodies with partial writes?",
               ("bytes-64k", "bytes-1m")),
    Experiment("churn", "What does accepting and closing a connection per request cost each model?", ("churn",)),
    Experiment("latency", "What latency do clients see at a constant request rate (corrected for coordinated "
               "omission), up to what rate does each model hold p99 <= 1 ms and <= 10 ms, and what do 1 % slow "
               "requests or requests that all differ do to it? (--rates; the closed-loop peaks come first)",
               ("latency-*",)),
    Experiment("gil", "What does removing the GIL change for threads, the pool, one loop and processes, on one CPU "
               "and on two? `python3 -m bench gil` runs it on both interpreters and both CPU sets",
               ("plaintext", "sleep-5", "cpu-200"), servers=subjects.GIL_SERVERS, across_runs=True),
)}


@dataclass(frozen=True)
class Preset:
    """A sweep's size (`--preset smoke|quick|plaintext|full` on the command line)."""

    about: str  # for --help
    servers: tuple[str, ...] | None  # None: every model (bench.subjects), the references always added
    workloads: tuple[str, ...]
    connections: tuple[int, ...]
    duration_s: int  # wrk takes whole seconds
    warmup_s: int
    repeat: int
    # The preset's own versions of some of its workloads (same names, so their cells compare with other runs'):
    # a fixed connection count, fewer repeats, a longer run. --connections, --repeat, --duration override them.
    variants: tuple[Workload, ...] = field(default=())

    def variant_of(self, name: str, overridden: Collection[str] = ()) -> Workload | None:
        """The named workload as this preset runs it, but with the base workload's `overridden` fields (the
        settings the command line gives)."""
        base = workload(name)
        own = next((v for v in self.variants if v.name == name), base)
        return own and replace(own, **{key: getattr(base, key) for key in overridden})


PRESETS: dict[str, Preset] = {
    "smoke": Preset("two models on plaintext, a check that everything runs", subjects.SMOKE,
                    ("plaintext",), (4, 32), duration_s=1, warmup_s=1, repeat=2),
    # The lesson in under 5 minutes: where each model wins and where it breaks. Plaintext gets two repeats (the
    # models are close there, so its spread decides ties); the others one: the reference run's repeats spread
    # 1-5 % on them (results/reference-docker) while what they show are 5x to 400x differences. /sleep/5 runs
    # 2 s: one event loop first works off the warm-up's queued handlers (256 x 5 ms), so 1 s often sees nothing.
    "quick": Preset("the default, the lesson in under 5 minutes: every model and the references on plaintext, "
                    "beside 1,000 and 10,000 idle connections, on /sleep/5 and under churn", None,
                    ("plaintext", "idle-1000", "idle-10000", "sleep-5", "churn"), (16, 256),
                    duration_s=1, warmup_s=1, repeat=2,
                    variants=(replace(WORKLOADS["idle-1000"], repeat=1), replace(WORKLOADS["idle-10000"], repeat=1),
                              replace(WORKLOADS["sleep-5"], connections=(256,), repeat=1, duration_s=2),
                              replace(WORKLOADS["churn"], connections=(16,), repeat=1))),
    # 484 s (results/2026-12-01/runners-docker) with the docker runner, 468 s (results/2026-12-01/runners-process)
    # with the process runner, when it was the quick preset.
    "plaintext": Preset("every server on plaintext at 4-512 connections, 3 repeats (the quick preset before "
                        "issue 27)", None, ("plaintext",), (4, 32, 128, 512), duration_s=2, warmup_s=1, repeat=3),
    # Every workload at two connection counts: 48 min (results/reference-docker) with the docker runner on a
    # 2-core host, 28 min (results/reference) with the process runner and the older HTTP core, both before the
    # latency workloads (their open-loop rates: estimated_s counts them). The idle and latency workloads bring
    # their own active set; at 50,000 and 100,000 idle connections only the multi-process servers run, the
    # others are unsupported there.
    "full": Preset("every workload and experiment, 16 and 256 connections, 3 repeats", None,
                   tuple(WORKLOADS), (16, 256), duration_s=2, warmup_s=1, repeat=3),
}
DEFAULT_PRESET = "quick"


def host_port(host: str, port: int) -> str:
    """[fd00:5a::1]:8080 or 192.0.2.1:8080: an address and port as URLs and nginx write them."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cpu_list(cpus: Sequence[int]) -> str:
    """taskset's and Docker's spelling of a CPU set: 0,1."""
    return ",".join(map(str, cpus))


@dataclass(frozen=True)
class Rate:
    """An open-loop rate: requests/s, or a fraction of the server's closed-loop peak measured first."""

    value: float
    fraction: bool = False

    def __str__(self) -> str:
        return f"{self.value:g}×peak" if self.fraction else f"{self.value:.10g}/s"


# Open-loop rates when --rates is not given: below, near and past the closed-loop peak, and three absolute
# rates that every workload of a server is offered alike (each workload's peak differs), so the fast requests
# alone, beside 1 % slow ones and all varied compare at the same load.
DEFAULT_RATES = (Rate(0.1, True), Rate(0.5, True), Rate(0.8, True), Rate(0.95, True), Rate(1.1, True),
                 Rate(1000), Rate(5000), Rate(20000))


@dataclass(frozen=True)
class SweepConfig:
    """Everything a run needs, resolved from a preset and the command line."""

    preset: str
    servers: tuple[str, ...]  # the references included
    workloads: tuple[Workload, ...]
    connections: tuple[int, ...]
    duration_s: int
    warmup_s: int
    repeat: int
    runner: str = "process"
    server_cpus: tuple[int, ...] = (0,)  # one CPU by default: the fair comparison; more let processes scale
    client_cpu: int = 1
    # Several machines (bench --server-engine/--client-engine): Docker engines by URL or context name, and
    # the address on the server engine's host the server listens on and wrk loads. None/(): one host.
    server_engine: str | None = None
    client_engines: tuple[str, ...] = ()
    server_addr: str | None = None
    wrk_threads: int = 1  # one wrk thread per client CPU on this 2-core host
    wrk_timeout_s: int = 2
    ready_timeout_s: float = 10.0
    remeasure: int = 2  # extra tries at most for a repeat flagged disturbed or stalled (bench/flags.py)
    subjects: tuple[subjects.Subject, ...] = ()  # the descriptions of its servers, as results.json keeps them
    rates: tuple[Rate, ...] = DEFAULT_RATES  # of the open-loop workloads


@dataclass(frozen=True)
class Point:
    server: str
    workload: Workload
    connections: int
    repeat: int
    rate: Rate | None = None  # open loop at this rate; None: wrk's closed loop (an open-loop workload's peak)

    @property
    def key(self) -> tuple:
        """Record.key of the point's records."""
        point = self.server, self.workload.name, self.connections, self.repeat
        return point if self.rate is None else (*point, str(self.rate))


def plan(config: SweepConfig) -> list[Point]:
    """Points in run order: the repeats outermost, each a pass over every server, one server at a time (reused
    across the connection counts of its workload). Each repeat of a point then has a server of its own, started
    minutes apart from the others: the [min–max] of the repeats shows how far a run reproduces, drift and start
    to start included, not only how steady one server was over a few seconds.
    An open-loop workload's points at one connection count start with its closed-loop peak (wrk), then go up
    its rates."""
    return [
        Point(server, workload, connections, repeat, rate)
        for repeat in range(1, config.repeat + 1)
        for workload in config.workloads if repeat <= (workload.repeat or config.repeat)
        for server in config.servers
        for connections in workload.connections or config.connections
        for rate in ((None, *config.rates) if workload.open_loop else (None,))
    ]


# What a sweep spends besides wrk's own seconds, from the reference host's docker runs (results/2026-12-01/
# runners-docker: 144 points, 36 servers started, 484 s): a wrk run lasts about this much past its duration
# (exec, sampling), a server start (and stop, and verification) about this much, and the holders open about
# this many idle connections a second.
WRK_RUN_OVERHEAD_S = 0.12
SERVER_START_S = 0.6
IDLE_OPENED_PER_S = 20_000


def estimated_s(config: SweepConfig, runs: Callable[[Point], bool] = lambda point: True) -> float:
    """The sweep's wall time from its plan: per server started, its start and idle connections, then a warm-up
    and a measured run per connection count; `runs`: whether a point is measured (not unsupported)."""
    total = 0.0
    for _, points in groupby(plan(config), key=lambda p: (p.repeat, p.server, p.workload)):
        if measured := [p for p in points if runs(p)]:
            total += SERVER_START_S + measured[0].workload.idle / IDLE_OPENED_PER_S
            duration_s = measured[0].workload.duration_s or config.duration_s
            total += sum(point_s(config, p, duration_s) for p in measured)
    return total


def point_s(config: SweepConfig, point: Point, duration_s: int) -> float:
    """One measured point: a warm-up and wrk's run; an open-loop rate follows its peak's warm-up and, at or past
    the peak, the generator waits out one timeout for the answers still due (its drain)."""
    if point.rate is None:
        return config.warmup_s + duration_s + 2 * WRK_RUN_OVERHEAD_S
    past_peak = point.rate.fraction and point.rate.value >= 1
    return duration_s + (config.wrk_timeout_s if past_peak else 0) + 2 * WRK_RUN_OVERHEAD_S
