"""How the sweep reaches the server: the namespace topology of one host, or other machines' networks.

`Namespaces`: sk-server and sk-client joined by the veth pair; requests go from sk-client, the
counters are swissknife0's. `Machines` (bench --server-engine/--client-engine): the server listens
on an address of the server engine's host, in its host network; checks go from a container on a
client engine, as wrk's load does, and the counters are those of the server host's interface that
holds the address, read from a container on the server engine. The `python3 -m bench.network`
commands below are what those containers run.

    python3 -m bench.network free-port ADDR        a port nothing listens on at ADDR
    python3 -m bench.network counters ADDR         JSON: the rx/tx counters of the interface holding ADDR
    python3 -m bench.network fetch ADDR PORT PATH TIMEOUT_S   JSON: one GET's status, version, headers, body
"""

from __future__ import annotations

import base64
import fcntl
import http.client
import ipaddress
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Protocol

from bench.errors import BenchError
from bench.flags import INTERVAL_S

COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
SIOCGIFADDR = 0x8915
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Response:
    status: int
    version: int  # 11 for HTTP/1.1
    headers: dict[str, str]  # names lower-cased
    body: bytes


class Network(Protocol):
    server_addr: str
    traffic: str  # what counters() counts, for the report ("not measured" when it cannot)

    def free_port(self) -> int:
        """A port nothing listens on at the server address (a fresh one per start: no TIME_WAIT clashes)."""

    def fetch(self, port: int, path: str, timeout_s: float) -> Response:
        """GET path from where wrk runs; OSError or HTTPException when it cannot."""

    def counters(self) -> dict[str, int] | None:
        """rx/tx bytes and packets of the server's interface (tx: towards the clients); None: not measured."""

    def intervals(self) -> Intervals | None:
        """A sampler of the server interface's tx bytes per INTERVAL_S while a run goes on; None: not measured."""


def get(host: str, port: int, path: str, timeout_s: float) -> Response:
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    return Response(response.status, response.version,
                    {name.lower(): value for name, value in response.getheaders()}, body)


def bound_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def interface_of(address: str) -> str | None:
    """The interface of this network namespace that holds `address`."""
    wanted = ipaddress.ip_address(address)
    if wanted.version == 6:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            hex_address, *_, name = line.split()
            if ipaddress.IPv6Address(bytes.fromhex(hex_address)) == wanted:
                return name
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                found = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address on it
                continue
            if ipaddress.IPv4Address(found[20:24]) == wanted:
                return name
    return None


def interface_counters(name: str) -> dict[str, int]:
    statistics = Path("/sys/class/net") / name / "statistics"
    return {key: int((statistics / key).read_text()) for key in COUNTERS}


class Namespaces:
    """One host: the server in sk-server, wrk and the checks in sk-client, swissknife0's counters."""

    def __init__(self, topo) -> None:  # netns.config.Topology; imported lazily, it needs pyroute2's setns
        self.topo = topo
        self.server_addr = topo.server_addr
        self.traffic = f"{topo.server_if}, the server end of the veth pair ({topo.server_ns} - {topo.client_ns})"

    def free_port(self) -> int:
        from netns import ns
        with ns.inside(self.topo.server_ns):
            return bound_port(self.server_addr)

    def fetch(self, port: int, path: str, timeout_s: float) -> Response:
        from netns import ns
        with ns.inside(self.topo.client_ns):  # the socket is created (and stays) in sk-client
            return get(self.server_addr, port, path, timeout_s)

    def counters(self) -> dict[str, int]:
        from netns.topology import counters
        return counters(self.topo)

    def intervals(self) -> Intervals:
        return Intervals(self.topo.server_ns, self.topo.server_if)


class Intervals:
    """The tx bytes of `interface` in namespace `namespace` per INTERVAL_S, sampled by a thread of ours inside
    that namespace while the block runs (/proc/thread-self/net/dev is the thread's namespace's): throughput
    inside a run at no cost to wrk, where a Lua response() hook would slow every response down."""

    def __init__(self, namespace: str, interface: str) -> None:
        self.namespace, self.interface = namespace, interface
        self.samples: list[tuple[float, int]] = []  # (monotonic s, tx bytes so far)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="intervals", daemon=True)

    def __enter__(self) -> Intervals:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _tx_bytes(self) -> int:
        for line in Path("/proc/thread-self/net/dev").read_text().splitlines():
            name, _, figures = line.partition(":")
            if name.strip() == self.interface:
                return int(figures.split()[8])
        raise OSError(f"{self.interface} not in {self.namespace}")

    def _sample(self) -> None:
        from netns import ns
        try:
            with ns.inside(self.namespace):
                start = time.monotonic()
                while True:
                    self.samples.append((time.monotonic(), self._tx_bytes()))
                    # On a fixed grid: a late sample does not shift the ones after it.
                    if self._stop.wait(INTERVAL_S - (time.monotonic() - start) % INTERVAL_S):
                        self.samples.append((time.monotonic(), self._tx_bytes()))
                        return
        except OSError:  # the interface gone mid-run: the run itself fails and says so
            return

    def per_interval(self) -> list[int]:
        """Bytes sent in each INTERVAL_S (the last interval may be shorter)."""
        return [after - before for (_, before), (_, after) in pairwise(self.samples)]


Exec = Callable[[Sequence[str]], str]  # runs `python3 -m bench.network ...` in a container; its stdout


class Machines:
    """Other machines: `on_server` and `on_client` run this module's commands in containers of the
    server engine and of a client engine (host networks both)."""

    def __init__(self, server_addr: str, on_server: Exec, on_client: Exec) -> None:
        self.server_addr, self._on_server, self._on_client = server_addr, on_server, on_client
        found = json.loads(self._on_server(["counters", server_addr]))
        self._interface = found and found["interface"]
        if found is None:
            raise BenchError(f"no interface of the server engine's host holds {server_addr} (--server-addr)")
        self.traffic = (f"{self._interface}, the server host's interface holding {server_addr}"
                        if found["counters"] else NOT_MEASURED)

    def free_port(self) -> int:
        return int(self._on_server(["free-port", self.server_addr]))

    def fetch(self, port: int, path: str, timeout_s: float) -> Response:
        found = json.loads(self._on_client(["fetch", self.server_addr, str(port), path, str(timeout_s)]))
        if "error" in found:
            raise OSError(found["error"])
        return Response(**found | {"body": base64.b64decode(found["body"])})

    def counters(self) -> dict[str, int] | None:
        if self.traffic == NOT_MEASURED:
            return None
        return json.loads(self._on_server(["counters", self.server_addr]))["counters"]

    def intervals(self) -> None:  # a container per sample would cost more than it tells
        return None


def main(argv: list[str]) -> int:
    command, address, *rest = argv
    if command == "free-port":
        print(bound_port(address))
    elif command == "counters":
        name = interface_of(address)
        try:
            found = name and interface_counters(name)
        except OSError:  # no sysfs here: the interface is known, its counters not
            found = None
        print(json.dumps(name and {"interface": name, "counters": found}))
    elif command == "fetch":
        port, path, timeout_s = rest
        try:
            response = get(address, int(port), path, float(timeout_s))
        except (OSError, http.client.HTTPException) as error:
            print(json.dumps({"error": repr(error)}))
            return 0
        print(json.dumps(asdict(response) | {"body": base64.b64encode(response.body).decode()}))
    else:
        print(f"unknown command {command}; see {__doc__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
