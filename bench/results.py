"""A run's results: one flat record per point and repeat, kept as results.json and results.csv.

Both files are replaced atomically after every point, so an interrupted run
leaves valid files holding the points done.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import jsonschema

from bench import flags
from bench.config import DISTURBED_CPU_SHARE
from bench.errors import BenchError

# 2: config.server_cpus (a list) replaced config.server_cpu; 3: config.preset was config.profile;
# 4: records' engine_cpu_share (older runs: null, their other_cpu_share includes the engine's) and what holding
#    the idle connections took and cost (idle_open_s ... idle_kernel_kib_per_connection, optional);
# 5: config.server_engine/client_engines/server_addr and record.clients (several machines)
# 6: environment.engines describes every engine (one "local" on one host) with its API, cgroup and seccomp
# 7: records' attempt, flags, flag_details, superseded_by, interval_tx_bytes, wrk_runtime_s, wrk_elapsed_s
#    (bench/flags.py; older runs get the flags their figures allow); the run's plan_digest, efficiency and resumed
SCHEMA_VERSION = 7
SCHEMA_PATH = Path(__file__).with_name("results.schema.json")
# What schema 6 added to each engine (null in older runs).
ENGINE_FIELDS_6 = ("api_version", "cgroup_version", "cgroup_driver", "seccomp_profile", "security_options",
                   "containerd", "runc")
JSON_NAME = "results.json"
CSV_NAME = "results.csv"
FLAMEGRAPH_DIR = "flamegraphs"  # SVGs and the folded stacks they were drawn from
WRK_DIR = "wrk"  # each client's wrk report behind a merged point (several client engines)


@dataclass
class Record:
    """One measured (or failed) point: every metric, flat, None when not measured."""

    server: str
    workload: str
    connections: int
    repeat: int
    status: str  # "ok" | "failed" | "unsupported" (the model cannot run this point, by design)
    failure: str | None = None
    started_at: str | None = None
    # wrk
    requests: int | None = None
    duration_s: float | None = None
    requests_per_s: float | None = None
    bytes: int | None = None
    errors_connect: int | None = None
    errors_read: int | None = None
    errors_write: int | None = None
    errors_status: int | None = None
    errors_timeout: int | None = None
    latency_mean_us: float | None = None
    latency_stdev_us: float | None = None
    latency_max_us: float | None = None
    latency_p50_us: float | None = None
    latency_p75_us: float | None = None
    latency_p90_us: float | None = None
    latency_p99_us: float | None = None
    latency_p99_9_us: float | None = None
    # the server, over all its processes
    server_cpu_user_s: float | None = None
    server_cpu_sys_s: float | None = None
    server_cpu_share: float | None = None  # of its pinned CPUs (1.0: all of them busy)
    cpu_us_per_request: float | None = None
    cpu_user_us_per_request: float | None = None
    cpu_sys_us_per_request: float | None = None
    server_peak_rss_kib: int | None = None  # since the server started
    server_processes: int | None = None
    # the load generator
    client_cpu_s: float | None = None
    client_cpu_share: float | None = None
    client_bound: bool | None = None
    # CPUs' worth used while wrk ran by the container engine (dockerd, containerd, shims, runc; the
    # docker runner's cost of running wrk as an exec) and by every other process besides server and wrk
    engine_cpu_share: float | None = None
    other_cpu_share: float | None = None  # the engine's excluded
    # swissknife0, the server end of the veth pair (tx: server -> client)
    veth_rx_bytes: int | None = None
    veth_tx_bytes: int | None = None
    veth_rx_packets: int | None = None
    veth_tx_packets: int | None = None
    veth_tx_per_wrk_byte: float | None = None  # >= 1: every byte wrk read crossed the veth
    veth_consistent: bool | None = None
    # idle connections held beside wrk's (idle-connection workloads)
    idle_held: int | None = None  # open on the holders' side
    idle_on_server: int | None = None  # established at the server's port as the server namespace counts them
    idle_open_s: float | None = None  # from the first holder's start until the server had accepted them all
    idle_holders: int | None = None  # holder processes (one holds at most bench.holder.PER_HOLDER)
    idle_sources: int | None = None  # client source addresses (one takes at most bench.holder.PER_ADDRESS)
    idle_server_rss_before_kib: int | None = None  # the server's resident set (all processes) just before ...
    idle_server_rss_kib: int | None = None  # ... and with the idle connections accepted, before any wrk run
    idle_server_kib_per_connection: float | None = None  # the difference over idle_held
    idle_holder_kib_per_connection: float | None = None  # the holders' resident set growth over idle_held
    # Slab caches + TCP buffers, machine-wide (both ends of every connection: one kernel), growth over idle_held
    idle_kernel_kib_per_connection: float | None = None
    # several client engines (their runs merged above): each one's own figures, as ClientFigures dicts
    clients: list[dict] | None = None
    # Open-loop points (bench/openloop.py; optional: absent before them). The latency_* fields above then hold
    # the corrected latency (from each request's intended send time), these the rest:
    rate_asked: str | None = None  # the point's --rates value: "50000/s" or "0.5×peak"
    offered_rate: float | None = None  # requests/s the schedule asked for
    achieved_rate: float | None = None  # requests/s the generator sent
    peak_rate: float | None = None  # the closed-loop peak (wrk) the fractions scale
    generator_bound: bool | None = None  # achieved < 99 % of offered, or the generator used >= 90 % of its CPU
    generator_cpu_share: float | None = None
    generator_late_max_us: float | None = None  # the most the generator was behind its schedule
    overloaded: bool | None = None  # a backlog: latency kept growing through the run, or requests left waiting
    latency_growth: float | None = None  # mean corrected latency, the run's last third over its first
    unanswered: int | None = None  # still waiting at the end: recorded at their latency so far, and timeouts
    reconnects: int | None = None  # connections the server closed (their unanswered requests were sent again)
    latency_p99_99_us: float | None = None
    latency_uncorrected_mean_us: float | None = None  # from when a closed loop could have sent each request
    latency_uncorrected_max_us: float | None = None
    latency_uncorrected_p50_us: float | None = None
    latency_uncorrected_p75_us: float | None = None
    latency_uncorrected_p90_us: float | None = None
    latency_uncorrected_p99_us: float | None = None
    latency_uncorrected_p99_9_us: float | None = None
    latency_uncorrected_p99_99_us: float | None = None
    # The histograms themselves, [bucket's lowest ns, count] (bench.loadgen): percentiles recomputed, runs merged
    latency_histogram_ns: list[list[int]] | None = None
    latency_uncorrected_histogram_ns: list[list[int]] | None = None
    latency_series: list[list[int]] | None = None  # per interval by intended time: sent, answered, Σ µs, max µs
    latency_interval_ms: int | None = None
    classes: dict[str, dict] | None = None  # a mix's routes by path: weight, requests, latency_*_us, histogram_ns
    # integrity (bench/flags.py): a flagged repeat may be measured again, and every attempt is kept
    attempt: int = 1
    flags: list[str] = field(default_factory=list)  # names from flags.FLAGS
    flag_details: dict[str, str] = field(default_factory=dict)  # flag -> its evidence
    superseded_by: dict | None = None  # {"repeat", "attempt"} of the attempt that replaced this one
    interval_tx_bytes: list[int] | None = None  # the server interface's tx bytes per flags.INTERVAL_S
    wrk_runtime_s: float | None = None  # wrk's own runtime, by the wall clock (duration_s: the one rates use)
    wrk_elapsed_s: float | None = None  # the wrk run start to exit by bench's monotonic clock (the exec included)

    @property
    def key(self) -> tuple:
        """The point and repeat this attempt measured: (server, workload, connections, repeat), and an open-loop
        point's rate after them."""
        point = self.server, self.workload, self.connections, self.repeat
        return point if self.rate_asked is None else (*point, self.rate_asked)

    @property
    def wrk_errors(self) -> int:
        """All of wrk's error counters together (connect, read, write, status, timeout)."""
        return sum(getattr(self, f.name) or 0 for f in fields(self) if f.name.startswith("errors_"))

    @property
    def disturbed(self) -> bool:
        return (self.other_cpu_share or 0) >= DISTURBED_CPU_SHARE


@dataclass(frozen=True)
class ClientFigures:
    """One client engine's share of a merged point."""

    engine: str
    requests: int
    bytes: int
    errors: int
    latency_p50_us: float | None
    latency_p99_us: float | None
    cpu_s: float  # its wrk container's CPU
    cpu_share: float  # of the one CPU it is pinned to
    client_bound: bool  # this wrk's core saturated while the server's was not


@dataclass
class ServerProfile:
    """One extra wrk run per (server, workload) with perf on the server; not one of the measured records."""

    server: str
    workload: str
    connections: int
    status: str  # "ok" | "unavailable" | "failed" (bench.profiling.ProfileResult)
    message: str  # empty when ok: what to change, or what broke
    python_method: str  # "perf_jit" | "perf" | "none": how Python functions reached perf
    notes: list[str] = field(default_factory=list)  # what a reader of the graph must know (missing frames)
    svg: str | None = None  # relative to the run directory
    folded: str | None = None
    requests_per_s: float | None = None  # of the profiled run, perf attached
    syscalls_per_request: float | None = None
    syscalls_message: str = ""  # why syscalls_per_request is None
    offcpu_svg: str | None = None  # the off-CPU profile (bench.profiling.offcpu), relative to the run directory
    offcpu_folded: str | None = None
    wall_svg: str | None = None  # on-CPU and off-CPU stacks in one graph
    handoff_us: dict[str, float] | None = None  # a queue's hand-off to a waiting worker: count, mean, p50, p99
    offcpu_message: str = ""  # why there is no off-CPU profile


@dataclass
class Profiling:
    """The run's flame graph settings and results (sweep --flamegraphs, bench profile)."""

    duration_s: float  # perf record's sampling time per server
    syscall_window_s: float  # perf stat's counting time, before the sampling
    diff_pairs: list[list[str]]  # [before, after] servers drawn as differential flame graphs
    problem: str | None = None  # why perf could not run here: no profiles were taken
    profiles: list[ServerProfile] = field(default_factory=list)

    @classmethod
    def from_json(cls, document: dict) -> Profiling:
        return cls(**document | {"profiles": [ServerProfile(**p) for p in document["profiles"]]})


@dataclass
class Run:
    name: str
    status: str  # "running" | "complete" | "interrupted"
    started_at: str
    environment: dict
    config: dict
    finished_at: str | None = None
    records: list[Record] = field(default_factory=list)
    profiling: Profiling | None = None  # None: no flame graphs asked for
    plan_digest: str | None = None  # of the points planned (bench resume checks the plan is the same)
    # wall_s, wrk_s, wrk_share: how much of the sweep's wall time wrk ran (None until the sweep ends)
    efficiency: dict | None = None
    resumed: list[dict] = field(default_factory=list)  # each `bench resume`: when, forced, what differed
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, document: dict) -> Run:
        profiling = document.get("profiling")  # absent from runs made before profiling existed
        return cls(**document | {"records": [Record(**r) for r in document["records"]],
                                 "profiling": profiling and Profiling.from_json(profiling)})


def write_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def csv_text(records: list[Record]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(Record)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in records)
    return out.getvalue()


def save(directory: Path, run: Run) -> None:
    write_atomic(directory / JSON_NAME, json.dumps(asdict(run), indent=1) + "\n")
    write_atomic(directory / CSV_NAME, csv_text(run.records))


def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def upgraded(document: dict) -> dict:
    """A results.json of an older schema in the current one (older runs stay readable, plottable, comparable)."""
    config = dict(document.get("config", {}))
    version = document.get("schema_version")
    if version == 1 and "server_cpu" in config:
        config["server_cpus"] = [config.pop("server_cpu")]
        version = 2
    if version == 2 and "profile" in config:
        config["preset"] = config.pop("profile")
        version = 3
    records = document.get("records", [])
    if version == 3:
        records = [{**record, "engine_cpu_share": None} for record in records]
        version = 4
    if version == 4:
        config.update(server_engine=None, client_engines=[], server_addr=None)
        records = [{**record, "clients": None} for record in records]
        version = 5
    environment = document.get("environment", {})
    if version == 5:
        if "engines" in environment:
            environment = {**environment, "engines": [{**engine, **dict.fromkeys(ENGINE_FIELDS_6)}
                                                      for engine in environment["engines"]]}
        version = 6
    if version == 6:
        records = [asdict(r) for r in flagged([Record(**r) for r in records], config)]
        version = 7
    return {**document, "schema_version": version, "environment": environment, "config": config,
            "records": records}


def flagged(records: list[Record], config: dict) -> list[Record]:
    """Records of a run made before flags, with the flags their own figures allow (no intervals were kept)."""
    for record in records:
        if record.status == "ok":
            flags.add_flags(record, flags.point_flags(record, config["duration_s"], config["wrk_timeout_s"]))
    flags.mark_outliers(records)
    return records


def load(directory: Path) -> Run:
    """Read and validate a run's results.json."""
    path = directory / JSON_NAME
    try:
        document = upgraded(json.loads(path.read_text()))
        jsonschema.validate(document, schema())
    except (OSError, json.JSONDecodeError) as error:
        raise BenchError(f"cannot read {path}: {error}") from None
    except jsonschema.ValidationError as error:
        raise BenchError(f"{path} does not match {SCHEMA_PATH.name}: {error.message}") from None
    return Run.from_json(document)
