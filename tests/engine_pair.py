"""A second machine simulated on this host: a second dockerd in a network namespace of its own.

The daemon has its own data-root, exec-root, pid file, socket and config (and so its own containerd,
started by it inside the namespace: host-network containers of this daemon live there). The namespace
is joined to the host's by a veth pair with addresses of its own (a Place: host_addr on the host's end,
engine_addr on the engine's), so load from the second daemon to a server on the first only ever goes
to host_addr and crosses that veth. `second_engine()` builds it all and takes it all down again: the
host's dockerd by default, or another one (trixie's Engine 26, docker/fetch-engine.sh) from `bin_dir`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, NetNS, netns

import docker
from netns.topology import CLIENT_SYSCTLS

PREFIX = 64
IFA_F_NODAD = 0x02  # no duplicate-address detection: the addresses are usable at once
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
KEY_PATH_BEFORE = 25  # Engine 25 dropped the key file (its ID is a file in the data-root)


@dataclass(frozen=True)
class Place:
    """Where a second engine lives: its namespace, and the veth pair joining it to the host's."""

    ns: str
    host_if: str
    engine_if: str
    host_addr: str
    engine_addr: str


PAIR = Place("sk-engine2", "skeng0", "skeng1", "fd00:5b::1", "fd00:5b::2")  # the host's engine, again
# Its own place, so that it and a PAIR engine (another suite's, another session's) never meet.
ENGINE26 = Place("sk-engine26", "skeng26h", "skeng26e", "fd00:5c::1", "fd00:5c::2")


@dataclass(frozen=True)
class SecondEngine:
    root: Path  # holds the daemon's data-root, exec-root, pid file, socket, config and log
    process: subprocess.Popen
    place: Place

    @property
    def url(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    @property
    def log(self) -> str:
        return (self.root / "dockerd.log").read_text(errors="replace")[-3000:]

    def client(self, timeout: int = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)


def veth_counters(place: Place = PAIR) -> dict[str, int]:
    """rx/tx bytes of the host's end of the pair (tx: host -> second engine)."""
    stats = Path("/sys/class/net") / place.host_if / "statistics"
    return {key: int((stats / key).read_text()) for key in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")}


def _link_up(place: Place) -> None:
    netns.create(place.ns)
    with IPRoute() as host, NetNS(place.ns, flags=0) as engine:
        engine_fd = os.open(f"/run/netns/{place.ns}", os.O_RDONLY)
        try:
            host.link("add", ifname=place.host_if, kind="veth",
                      peer={"ifname": place.engine_if, "net_ns_fd": engine_fd})
        finally:
            os.close(engine_fd)
        for ipr, ifname, address in ((host, place.host_if, place.host_addr),
                                     (engine, place.engine_if, place.engine_addr)):
            index = ipr.link_lookup(ifname=ifname)[0]
            ipr.addr("add", index=index, address=address, prefixlen=PREFIX, flags=IFA_F_NODAD)
            ipr.link("set", index=index, state="up")
        engine.link("set", index=engine.link_lookup(ifname="lo")[0], state="up")
    # As netns/setup.py gives sk-client: churn's closed connections must not run the ports out
    # (a real client machine needs the same; bench cannot set another machine's sysctls).
    for key, value in CLIENT_SYSCTLS.items():
        subprocess.run(["nsenter", f"--net=/run/netns/{place.ns}", "sysctl", "-qw", f"{key}={value}"], check=True)


def _link_down(place: Place) -> None:
    # Removing the namespace destroys its end of the pair, and with it the host's end.
    if place.ns in netns.listnetns():
        netns.remove(place.ns)
    with IPRoute() as host, suppress(Exception):
        if found := host.link_lookup(ifname=place.host_if):
            host.link("del", index=found[0])


def dockerd_major(env: dict[str, str]) -> int:
    """The major version of the dockerd that `env`'s PATH finds ("Docker version 26.1.5+dfsg1, build ...")."""
    out = subprocess.run(["dockerd", "--version"], env=env, capture_output=True, text=True, check=True).stdout
    return int(out.split()[2].split(".")[0])


def _start_dockerd(root: Path, place: Place, bin_dir: Path | None) -> SecondEngine:
    # dockerd starts containerd, containerd the shim, the shim runc: each found on this PATH.
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"} if bin_dir else dict(os.environ)
    # Not the host's /etc/docker/daemon.json; before Engine 25 its own key file too (the daemon's ID comes
    # from it, and the default one is the first daemon's): another machine has another ID.
    config = {"deprecated-key-path": str(root / "key.json")} if dockerd_major(env) < KEY_PATH_BEFORE else {}
    (root / "daemon.json").write_text(json.dumps(config))
    command = [
        "nsenter", f"--net=/run/netns/{place.ns}", "dockerd",
        f"--data-root={root / 'data'}", f"--exec-root={root / 'exec'}", f"--pidfile={root / 'dockerd.pid'}",
        f"--host=unix://{root / 'docker.sock'}", f"--config-file={root / 'daemon.json'}",
        "--iptables=false",  # its bridge stays unused (every container of ours is host-network)
    ]
    with open(root / "dockerd.log", "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env)
    engine = SecondEngine(root, process, place)
    deadline = time.monotonic() + START_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        try:
            engine.client(timeout=5).ping()
            return engine
        except Exception:  # not up yet
            time.sleep(0.5)
    log = engine.log
    _stop_dockerd(engine)
    raise RuntimeError(f"the second dockerd did not answer in {START_TIMEOUT_S} s (exit code {process.returncode}): "
                       f"{log}")


def _stop_dockerd(engine: SecondEngine) -> None:
    with suppress(Exception):  # whatever state it is in: remove its containers first (their shims outlive it)
        for container in engine.client(timeout=30).containers.list(all=True):
            container.remove(force=True)
    if engine.process.poll() is None:
        engine.process.terminate()
        try:
            engine.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            engine.process.kill()
            engine.process.wait()
    with suppress(ProcessLookupError):  # its containerd, if it outlived it
        os.killpg(engine.process.pid, signal.SIGKILL)
    _unmount_under(engine.root)
    shutil.rmtree(engine.root, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    """Whatever the daemon left mounted below `root` (its mounts are in the host's mount namespace)."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{root}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


@contextmanager
def second_engine(place: Place = PAIR, bin_dir: Path | None = None,
                  parent: str = "/var/tmp") -> Iterator[SecondEngine]:
    """The second daemon (the dockerd in `bin_dir`, else the host's), up in `place`; everything it made
    (namespace, veth, daemon, its files and mounts) gone after."""
    _link_down(place)  # a previous run killed before its teardown
    root = Path(tempfile.mkdtemp(prefix=f"{place.ns}-", dir=parent))
    try:
        _link_up(place)
        engine = _start_dockerd(root, place, bin_dir)  # on failure it cleans up after itself
        try:
            yield engine
        finally:
            _stop_dockerd(engine)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        _link_down(place)
