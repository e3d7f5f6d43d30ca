"""python3 -m bench [options]      sweep servers x workloads x connection counts
python3 -m bench profile [opts]   flame graphs, where the time goes and syscalls/request (plaintext)
python3 -m bench gil [opts]       the gil experiment: with and without the GIL, on one CPU and on two
python3 -m bench plot DIR         redraw plots, report.md and report.html from DIR/results.json (a gil DIR: its report)
python3 -m bench index [DIR]      DIR/index.html (default results/): every run under DIR, linked to its page
python3 -m bench compare A B      per-point ratios B/A of two runs (--html: as a page too)
python3 -m bench ship-image --from ENGINE --to ENGINE   copy the image to another Docker engine
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from bench import subjects
from bench.analysis.compare import write_comparison
from bench.analysis.index import write_index
from bench.analysis.report import write_gil_report, write_outputs
from bench.config import DEFAULT_PRESET, EXPERIMENTS, PRESETS, WORKLOADS, SweepConfig, workload
from bench.console import RESULTS_DIR, console, print_comparison, print_paths, print_subjects, run_shown
from bench.errors import BenchError
from bench.gil import run_gil
from bench.lifecycle import TOPOLOGY_FIX, require_root
from bench.results import JSON_NAME
from bench.runners import RUNNERS, ProcessRunner, Runner, docker_runner
from bench.runners.base import FT_BUILD, FT_IMAGE
from netns.config import Topology
from netns.ns import NamespaceError
from netns.topology import TopologyError

# Differential flame graphs drawn when both servers were profiled and no --diff says otherwise.
DEFAULT_DIFFS = subjects.DEFAULT_DIFFS
PROFILE_CONNECTIONS = 64
GIL_CONNECTIONS = 64




def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def default_cpus() -> tuple[tuple[int, ...], int]:
    """The first two CPUs we may use; both sides share the only one on a 1-CPU host."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0],), allowed[1] if len(allowed) > 1 else allowed[0]


def parse_cpus(text: str) -> tuple[tuple[int, ...], int]:
    """SERVER,CLIENT where SERVER is a CPU or a range A-B: `0,1` or `0-3,4`."""
    server, _, client = text.partition(",")
    first, _, last = server.partition("-")
    server_cpus = tuple(range(int(first), int(last or first) + 1))
    if not server_cpus:
        raise ValueError(text)
    return server_cpus, int(client)


def server_pair(text: str) -> tuple[str, str]:
    before, comma, after = text.partition(",")
    if not (comma and before and after):
        raise argparse.ArgumentTypeError(f"takes two servers as A,B, not {text}")
    return before, after


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options the sweep and `profile` share."""
    parser.add_argument("--servers", nargs="+", metavar="NAME",
                        help="subjects by name, or a whole category: model, peer, user (--list-subjects names them; "
                             "default: every model); the references and the --subject files are always added")
    parser.add_argument("--subject", action="append", type=Path, metavar="FILE.toml", default=[],
                        help="add your own server, described in a TOML file (README: Benchmark your own server); "
                             "repeatable")
    parser.add_argument("--duration", type=positive, metavar="S", help="seconds per measured run and of perf sampling")
    parser.add_argument("--out", type=Path, metavar="DIR", help="default: results/<timestamp>-<preset>")
    parser.add_argument("--runner", choices=RUNNERS, help="process (default) or docker; docker with --server-engine")
    parser.add_argument("--cpus", metavar="SERVER,CLIENT",
                        help="CPUs to pin the server and wrk to; SERVER may be a range (0-1,1: the server on two "
                             "CPUs, so a multi-process server's workers run in parallel)")
    parser.add_argument("--server-python", metavar="PATH",
                        help="interpreter of the Python servers (default: bench's own; with --runner docker the "
                             "image's python3, and PATH is inside the image); 'free-threaded' and 'gil' name the "
                             f"two CPython builds of {FT_IMAGE} ({FT_BUILD}); 3.12+ puts Python functions in the "
                             "flame graphs")
    parser.add_argument("--diff", nargs="+", type=server_pair, metavar="A,B",
                        help="differential flame graphs from A to B (default: "
                             f"{' and '.join(','.join(pair) for pair in DEFAULT_DIFFS)}, of those profiled)")
    machines = parser.add_argument_group(
        "two or more machines", "the server on one Docker engine, wrk on others (README: Two or more machines); "
        "ENGINE is a unix:// tcp:// ssh://user@host URL or a Docker context name")
    machines.add_argument("--server-engine", metavar="ENGINE", help="the engine the servers run on (host network)")
    machines.add_argument("--client-engine", action="append", metavar="ENGINE",
                          help="an engine that runs one wrk per point; repeat it for several, which start together "
                               "and whose results are merged")
    machines.add_argument("--server-addr", metavar="ADDR",
                          help="an address of the server engine's host: the server listens there and wrk loads it")


def resolve_engines(args: argparse.Namespace, parser: argparse.ArgumentParser,
                    workloads: list[str]) -> tuple[str, str | None, tuple[str, ...], str | None]:
    """The runner and the engine options, checked: all three engine options or none."""
    engines = (args.server_engine, args.client_engine, args.server_addr)
    if not any(engines):
        return args.runner or ProcessRunner.name, None, (), None
    if not all(engines):
        parser.error("--server-engine, --client-engine and --server-addr go together")
    if args.runner == ProcessRunner.name:
        parser.error("--server-engine runs the servers and wrk in containers: it needs --runner docker")
    try:
        address = str(ipaddress.ip_address(args.server_addr))
    except ValueError:
        parser.error(f"--server-addr takes an IP address, not {args.server_addr!r}")
    if idle := [w for w in workloads if workload(w).idle]:
        parser.error(f"workload(s) {', '.join(idle)} hold idle connections from the client namespace of one host; "
                     "they do not run with --client-engine")
    return "docker", args.server_engine, tuple(args.client_engine), address


def sweep_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", "--profile", dest="preset", choices=PRESETS, default=DEFAULT_PRESET,
                        help="the sweep's size (--profile is the older spelling): "
                             + "; ".join(f"{name}: {preset.about}" for name, preset in PRESETS.items()))
    parser.add_argument("--workloads", nargs="+", metavar="NAME", help=f"from: {', '.join(WORKLOADS)}")
    parser.add_argument("--experiments", nargs="+", metavar="NAME",
                        help=f"run these experiments' workloads, from: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--connections", nargs="+", type=positive, metavar="N")
    parser.add_argument("--repeat", type=positive, metavar="N")
    parser.add_argument("--list-subjects", action="store_true",
                        help="print every server bench can measure (name, category, model, routes, limits) and exit")
    parser.add_argument("--json", action="store_true", help="with --list-subjects: as JSON")
    parser.add_argument("--flamegraphs", action="store_true",
                        help="one extra, unrecorded run per server and workload at its largest connection count, "
                             "profiled with perf")
    add_run_options(parser)
    return parser


def profile_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench profile",
        description="Flame graphs of every server under plaintext load at one connection count (one measured "
                    "run each, then a profiled one), where the time goes, syscalls per request.")
    parser.add_argument("--connections", type=positive, default=PROFILE_CONNECTIONS, metavar="N")
    add_run_options(parser)
    return parser


def gil_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench gil",
        description="The gil experiment as four runs into one directory: the servers on the GIL interpreter and "
                    "on the free-threaded one, each on one CPU and on two, every server and workload profiled "
                    "(syscalls and lock share); then DIR/report.md compares them.")
    parser.add_argument("--connections", nargs="+", type=positive, default=[GIL_CONNECTIONS], metavar="N")
    parser.add_argument("--repeat", type=positive, metavar="N")
    parser.add_argument("--gil-python", default="gil", metavar="PATH",
                        help="the interpreter with the GIL (default 'gil': the free-threaded one's twin build "
                             f"in {FT_IMAGE}); --server-python is the free-threaded one (default 'free-threaded')")
    parser.add_argument("--no-flamegraphs", action="store_true",
                        help="skip the profiled runs (no syscalls/request or lock shares)")
    add_run_options(parser)
    parser.set_defaults(server_python="free-threaded")
    return parser


def resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> SweepConfig:
    """The preset's values, overridden by the options given; bad names end in a usage error."""
    preset = PRESETS[args.preset]
    try:
        users = [subjects.REGISTRY.add(subjects.load_file(path)) for path in args.subject]
    except subjects.SubjectError as error:
        parser.error(f"--subject {error}")
    known = subjects.REGISTRY.names()
    chosen = [EXPERIMENTS[e] for e in args.experiments or () if e in EXPERIMENTS]
    # Experiments that name their models (gil) sweep only those, unless another one wants them all.
    named = [s for e in chosen for s in e.servers or ()] if chosen and all(e.servers for e in chosen) else None
    asked = [n for s in args.servers or () for n in (subjects.REGISTRY.names(s) if s in subjects.CATEGORIES else [s])]
    servers = asked or (named and list(dict.fromkeys(named))) or preset.servers or subjects.REGISTRY.names("model")
    if unknown := [s for s in servers if s not in known]:
        parser.error(f"unknown server(s) {', '.join(unknown)}; choose from: {', '.join(known)} "
                     f"(or a category: {', '.join(subjects.CATEGORIES)})")
    if unknown := [e for e in args.experiments or () if e not in EXPERIMENTS]:
        parser.error(f"unknown experiment(s) {', '.join(unknown)}; choose from: {', '.join(EXPERIMENTS)}")
    from_experiments = [w for e in args.experiments or () for w in EXPERIMENTS[e].default_workloads()]
    workloads = list(dict.fromkeys([*(args.workloads or ()), *from_experiments])) or [
        # Idle connections are held from one host's client namespace: on several machines a preset runs without.
        w for w in preset.workloads if not (args.client_engine and workload(w).idle)]
    if unknown := [w for w in workloads if workload(w) is None]:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from: {', '.join(WORKLOADS)}")
    runner, server_engine, client_engines, server_addr = resolve_engines(args, parser, workloads)
    try:
        server_cpus, client_cpu = parse_cpus(args.cpus) if args.cpus else default_cpus()
    except ValueError:
        parser.error(f"--cpus takes SERVER,CLIENT CPU numbers (SERVER may be a range A-B), not {args.cpus!r}")
    # On other machines' engines the runner checks the CPUs against each engine's.
    if server_engine is None and not {*server_cpus, client_cpu} <= os.sched_getaffinity(0):
        parser.error(f"--cpus: usable CPUs are {sorted(os.sched_getaffinity(0))}")
    connections = tuple(args.connections or preset.connections)
    given = [key for key, value in (("connections", args.connections), ("repeat", args.repeat),
                                    ("duration_s", args.duration)) if value]
    chosen = tuple(preset.variant_of(w, given) for w in workloads)
    counts = {*connections, *(c for w in chosen for c in w.connections or ())}
    if uneven := sorted(c for c in counts if c % max(len(client_engines), 1)):
        parser.error(f"{len(client_engines)} client engines share each point's connections evenly: "
                     f"{', '.join(map(str, uneven))} do not divide by {len(client_engines)}")
    return SweepConfig(
        preset=args.preset,
        servers=(swept := tuple(dict.fromkeys([*servers, *(u.name for u in users), *subjects.references()]))),
        workloads=chosen,
        connections=connections,
        duration_s=args.duration or preset.duration_s,
        warmup_s=preset.warmup_s,
        repeat=args.repeat or preset.repeat,
        runner=runner,
        server_cpus=server_cpus,
        client_cpu=client_cpu,
        server_engine=server_engine,
        client_engines=client_engines,
        server_addr=server_addr,
        subjects=tuple(subjects.get(name) for name in swept),
    )


def diff_pairs(args: argparse.Namespace, parser: argparse.ArgumentParser, config: SweepConfig) -> list[list[str]]:
    if args.diff and not args.flamegraphs:
        parser.error("--diff draws differential flame graphs: add --flamegraphs")
    if unknown := [s for pair in args.diff or () for s in pair if s not in config.servers]:
        parser.error(f"--diff: {', '.join(unknown)} not among the servers swept")
    return [list(pair) for pair in args.diff or DEFAULT_DIFFS if set(pair) <= set(config.servers)]


def make_runner(args: argparse.Namespace, parser: argparse.ArgumentParser, config: SweepConfig,
                topo: Topology) -> Runner:
    if config.server_engine:
        from bench.runners.docker import DEFAULT_IMAGE, IMAGE_ENV
        from bench.runners.engines import roles
        if args.server_python:
            parser.error("--server-python is for one host: with --server-engine the servers run the image's python3")
        found = roles(config.server_engine, config.client_engines, os.environ.get(IMAGE_ENV, DEFAULT_IMAGE),
                      config.server_addr)
        return docker_runner(topo, config.server_cpus, config.client_cpu, roles=found)
    if not args.server_python:
        return RUNNERS[config.runner](topo, config.server_cpus, config.client_cpu)
    return RUNNERS[config.runner](topo, config.server_cpus, config.client_cpu, args.server_python)


def sweep_command(argv: list[str]) -> int:
    parser = sweep_parser()
    args = parser.parse_args(argv)
    if args.list_subjects:
        return list_subjects(args, parser)
    return run_command(args, parser, resolve(args, parser))


def list_subjects(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """--list-subjects: every server bench knows (with the --subject files), as a table or --json."""
    try:
        for path in args.subject:
            subjects.REGISTRY.add(subjects.load_file(path))
    except subjects.SubjectError as error:
        parser.error(f"--subject {error}")
    known = sorted(subjects.REGISTRY.subjects.values(), key=lambda s: subjects.CATEGORIES.index(s.category))
    if args.json:
        print(json.dumps([s.describe() for s in known], indent=1))
    else:
        print_subjects(known)
    return 0


def profile_command(argv: list[str]) -> int:
    """A sweep of plaintext at one connection count, one repeat, with flame graphs."""
    parser = profile_parser()
    args = parser.parse_args(argv)
    args.preset, args.workloads, args.experiments = "plaintext", ["plaintext"], None
    args.connections, args.repeat, args.flamegraphs = [args.connections], 1, True
    return run_command(args, parser, replace(resolve(args, parser), preset="profile"))


def gil_command(argv: list[str]) -> int:
    """Four runs of the gil experiment (interpreter x CPU set) into DIR/<interpreter>-<n>cpu, then DIR/report.md."""
    parser = gil_parser()
    args = parser.parse_args(argv)
    if not args.cpus:  # the first two usable CPUs for the server, wrk on the second: --cpus 0-1,1 here
        first = min(os.sched_getaffinity(0))
        args.cpus = f"{first}-{first + 1},{first + 1}"
    args.preset, args.workloads, args.experiments = "plaintext", None, ["gil"]
    args.flamegraphs = not args.no_flamegraphs
    wide = replace(resolve(args, parser), preset="gil")
    if len(wide.server_cpus) < 2:
        parser.error("--cpus: gil compares one server CPU with several: give a range, e.g. 0-1,1")
    out = args.out or RESULTS_DIR / f"{datetime.now():%Y%m%d-%H%M%S}-gil"

    def run_one(config: SweepConfig, python: str, run_out: Path) -> int:
        return run_command(argparse.Namespace(**vars(args) | {"server_python": python, "out": run_out}), parser,
                           config)

    return run_gil(wide, {"gil": args.gil_python, "free-threaded": args.server_python}, out, run_one)


def run_command(args: argparse.Namespace, parser: argparse.ArgumentParser, config: SweepConfig) -> int:
    if config.server_engine is None:  # other machines' engines need no namespaces here
        require_root()
    diffs = diff_pairs(args, parser, config)
    topo = Topology()
    runner = make_runner(args, parser, config, topo)
    out = args.out or RESULTS_DIR / f"{datetime.now():%Y%m%d-%H%M%S}-{config.preset}"
    return run_shown(config, runner, out, args.flamegraphs, diffs)


def plot_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench plot",
                                     description="Redraw plots, report.md and report.html of a run.")
    parser.add_argument("directory", type=Path)
    directory = parser.parse_args(argv).directory
    # A gil experiment's directory holds one run per subdirectory: redraw the comparison.
    paths = write_outputs(directory) if (directory / JSON_NAME).exists() else write_gil_report(directory)
    print_paths(paths)
    return 0


def index_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench index",
                                     description="Write DIR/index.html: every run under DIR with a link to its page.")
    parser.add_argument("directory", type=Path, nargs="?", default=RESULTS_DIR)
    print_paths([write_index(parser.parse_args(argv).directory)])
    return 0


def compare_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench compare",
        description="Per-point ratios B/A of the medians, then how far B reproduces A: overlapping CPU µs/request "
                    "ranges, the servers' order, wall time, disturbed points.")
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--html", nargs="?", type=Path, const=True, metavar="FILE",
                        help="also write it as a page (default: compare-A-vs-B.html beside B)")
    args = parser.parse_args(argv)
    print_comparison(args.a, args.b)
    if args.html:
        page = args.b.parent / f"compare-{args.a.name}-vs-{args.b.name}.html" if args.html is True else args.html
        print_paths([write_comparison(args.a, args.b, page)])
    return 0


def ship_image_command(argv: list[str]) -> int:
    from bench.runners.docker import DEFAULT_IMAGE, IMAGE_ENV
    from bench.runners.engines import connect, ship_image
    parser = argparse.ArgumentParser(
        prog="python3 -m bench ship-image",
        description="Copy the image from one Docker engine to others (docker save | docker load through the "
                    "Docker SDK, streamed through this host), so that every engine of a sweep has the same image ID.")
    parser.add_argument("--from", dest="source", required=True, metavar="ENGINE")
    parser.add_argument("--to", dest="targets", required=True, action="append", metavar="ENGINE")
    parser.add_argument("--image", default=os.environ.get(IMAGE_ENV, DEFAULT_IMAGE))
    args = parser.parse_args(argv)
    source = connect(args.source)
    for target in args.targets:
        console.print(f"{args.image} {ship_image(args.image, source, connect(target))} now on {target}")
    return 0


COMMANDS = {"plot": plot_command, "index": index_command, "compare": compare_command, "profile": profile_command,
            "gil": gil_command, "ship-image": ship_image_command}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = COMMANDS.get(argv[0]) if argv else None
    try:
        return command(argv[1:]) if command else sweep_command(argv)
    except TopologyError as error:
        print(f"bench: error: {error}; {TOPOLOGY_FIX}", file=sys.stderr)
        return 2
    except (BenchError, NamespaceError) as error:  # NamespaceError names the fix itself
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
