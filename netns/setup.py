"""Build, inspect or remove the testbed topology.

    sudo python3 netns/setup.py [up|down|status] [options]

`up` (the default) creates namespaces sk-server and sk-client joined by the veth
pair swissknife0/swissknife1 with fd00:5a::1/64 and fd00:5a::2/64; run again, it
repairs whatever is missing or wrong. `down` removes exactly that, and the
extra client source addresses bench adds for large idle-connection runs. `status`
describes it (`--json` for machines) and exits non-zero unless it is healthy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields

# Run as a script (`python3 netns/setup.py`): make the project root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from netns.config import Shaping, Topology


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="netns/setup.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", default="up", choices=["up", "down", "status"])
    for f in fields(Topology):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                            help=f"default: {f.default}")
    parser.add_argument("--rate", help="limit each direction with tbf, e.g. 100mbit")
    parser.add_argument("--delay", help="add netem delay each direction, e.g. 10ms")
    parser.add_argument("--loss", help="add netem loss each direction, e.g. 1%%")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print(f"error: network namespaces need root: sudo python3 netns/setup.py {args.command}", file=sys.stderr)
        return 2
    try:
        from netns.topology import TopologyError, down, status, up
    except ImportError as err:
        print(
            f"error: {err.name or 'pyroute2'} is not installed for this Python ({sys.executable}); "
            "install it with `sudo apt install python3-pyroute2` or `pip install -r requirements.txt`, "
            "or run this from the image: `docker compose run --rm netns`",
            file=sys.stderr,
        )
        return 2
    topo = Topology(**{f.name: getattr(args, f.name) for f in fields(Topology)})
    started = time.perf_counter()
    try:
        if args.command == "up":
            changes = up(topo, Shaping(args.rate, args.delay, args.loss))
            for change in changes:
                print(change)
            verdict = "built" if changes else "already up, nothing to change"
            print(f"topology {verdict} in {time.perf_counter() - started:.3f} s: "
                  f"{topo.server_ns}:{topo.server_if} [{topo.server_addr}] <-> "
                  f"{topo.client_ns}:{topo.client_if} [{topo.client_addr}]")
            return 0
        if args.command == "down":
            removed, refused = down(topo)
            for line in removed + refused:
                print(line)
            if not removed and not refused:
                print("nothing of swissknife's to remove")
            print(f"down in {time.perf_counter() - started:.3f} s")
            return 1 if refused else 0
        report = status(topo)
        print(json.dumps(report.as_dict(), indent=2) if args.json else describe(report))
        return 0 if report.healthy else 1
    except TopologyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def describe(report) -> str:
    lines = [f"namespace {name}: {state}" for name, state in report.namespaces.items()]
    for link in report.links:
        if not link.present:
            lines.append(f"{link.namespace}:{link.name}: missing")
            continue
        lines.append(
            f"{link.namespace}:{link.name}: {link.kind} {link.state} mtu {link.mtu} "
            f"{' '.join(link.addresses) or 'no address'} qdisc {link.qdisc or 'none'} "
            f"rx {link.rx_bytes} B/{link.rx_packets} pkts tx {link.tx_bytes} B/{link.tx_packets} pkts"
        )
        if link.extra_addresses:
            lines.append(f"{link.namespace}:{link.name}: {len(link.extra_addresses)} extra client address(es) "
                         f"for idle connections: {' '.join(link.extra_addresses)}")
    if report.client_sysctls:
        lines.append("client sysctls: " + ", ".join(f"{k} = {v}" for k, v in report.client_sysctls.items()))
    lines.append(f"reachability: {report.reachability}")
    lines.append("healthy" if report.healthy else "UNHEALTHY: " + "; ".join(report.problems))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
