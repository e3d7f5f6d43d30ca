"""The testbed topology: two network namespaces joined by a veth pair.

    sk-server: swissknife0 fd00:5a::1/64  <── veth ──>  swissknife1 fd00:5a::2/64 :sk-client

Works with pyroute2 0.7 (Debian's python3-pyroute2) and 0.9 (PyPI): only calls
common to both lines are used (IPRoute, NetNS(name, flags=0), netns.*).

Ownership: a namespace is ours when the alias of its `lo` is OWNER_ALIAS; a
link is ours when its alias is OWNER_ALIAS. `down` removes only what carries
that mark, so a same-named namespace made by someone else is never deleted.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from netns import ns
from netns.config import Shaping, Topology

OWNER_ALIAS = "swissknife-testbed"
IFA_F_NODAD = 0x02  # add IPv6 addresses without duplicate-address detection (no 1.5 s wait)
ROOT_QDISC = 0xFFFFFFFF
IFF_UP = 0x1
SHAPING_HANDLE = 0x10000  # 1:
NETEM_MISSING = "this kernel has no sch_netem (delay/loss emulation); nothing was changed"
# The client opens tens of thousands of short connections (churn) and, closing
# first, keeps each port in TIME_WAIT for 60 s: with the defaults (28k ports,
# TIME_WAIT reuse on loopback only) a churn point exhausts the ports and the
# next ones measure connect() hunting for a free port, not the server. Per
# namespace, so the host's own settings are untouched.
CLIENT_SYSCTLS = {"net.ipv4.tcp_tw_reuse": "1", "net.ipv4.ip_local_port_range": "1024 65535"}


class TopologyError(RuntimeError):
    """Something stops the topology from being built, inspected or removed."""


@dataclass
class LinkStatus:
    name: str
    namespace: str
    present: bool = False
    owned: bool = False
    kind: str = ""
    state: str = ""
    mtu: int = 0
    addresses: list[str] = field(default_factory=list)
    qdisc: str = ""
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0


@dataclass
class TopologyStatus:
    namespaces: dict[str, str]  # name -> "ours" | "missing" | "foreign"
    links: list[LinkStatus]
    client_sysctls: dict[str, str]
    reachable: bool
    reachability: str
    problems: list[str]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return asdict(self) | {"healthy": self.healthy}


@contextmanager
def _ipr(namespace: str | None = None) -> Iterator[IPRoute]:
    """Netlink socket in `namespace` (never creating it) or in the current one."""
    handle = IPRoute() if namespace is None else NetNS(namespace, flags=0)
    with closing(handle):
        yield handle


def _attr(msg, name: str, default=None):
    value = msg.get_attr(name)
    return default if value is None else value


def _find_link(ipr: IPRoute, ifname: str):
    found = ipr.link_lookup(ifname=ifname)
    return ipr.get_links(found[0])[0] if found else None


def _link_kind(link) -> str:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else ""


def _namespace_state(name: str) -> str:
    if name not in netns.listnetns():
        return "missing"
    with _ipr(name) as ipr:
        lo = _find_link(ipr, "lo")
        return "ours" if lo is not None and _attr(lo, "IFLA_IFALIAS") == OWNER_ALIAS else "foreign"


def _global_addresses(ipr: IPRoute, index: int) -> list[tuple[str, int]]:
    return [
        (_attr(a, "IFA_ADDRESS"), a["prefixlen"])
        for a in ipr.get_addr(index=index, family=socket.AF_INET6)
        if not _attr(a, "IFA_ADDRESS", "").startswith("fe80:")
    ]


def _root_qdisc(ipr: IPRoute, index: int) -> str:
    for qdisc in ipr.get_qdiscs(index=index):
        if qdisc["parent"] == ROOT_QDISC:
            return _attr(qdisc, "TCA_KIND", "")
    return ""


def netem_available() -> bool:
    """Probe for sch_netem on the lo of a throwaway namespace, leaving nothing behind."""
    probe = f"sk-netem-probe-{time.monotonic_ns()}"
    netns.create(probe)
    try:
        with _ipr(probe) as ipr:
            try:
                ipr.tc("add", "netem", 1, handle=SHAPING_HANDLE, delay=1000)
            except NetlinkError as err:
                if err.code == errno.ENOENT:
                    return False
                raise
            return True
    finally:
        netns.remove(probe)


def up(topo: Topology, shaping: Shaping = Shaping()) -> list[str]:
    """Build or repair the topology; returns what was changed (empty: already correct)."""
    if shaping.wants_netem and not netem_available():
        raise TopologyError(NETEM_MISSING)
    changes: list[str] = []
    for name in (topo.server_ns, topo.client_ns):
        changes += _ensure_namespace(name)
    changes += _ensure_veth(topo)
    for namespace, ifname, address in topo.ends():
        with _ipr(namespace) as ipr:
            changes += _ensure_end(ipr, namespace, ifname, address, topo)
            changes += _ensure_shaping(ipr, ifname, shaping)
    return changes + _ensure_sysctls(topo.client_ns, CLIENT_SYSCTLS)


def _ensure_namespace(name: str) -> list[str]:
    state = _namespace_state(name)
    if state == "foreign":
        raise TopologyError(
            f"network namespace {name!r} exists but was not created by swissknife; "
            f"remove it (ip netns delete {name}) or choose another name with --server-ns/--client-ns"
        )
    if state == "ours":
        return []
    netns.create(name)
    with _ipr(name) as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, ifalias=OWNER_ALIAS, state="up")
    return [f"created namespace {name}"]


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys/" + key.replace(".", "/"))


def _sysctl_values(keys: Iterable[str]) -> dict[str, str]:
    """Values as `sysctl` prints them (whitespace collapsed), in the calling thread's namespace."""
    return {key: " ".join(_sysctl_path(key).read_text().split()) for key in keys}


def read_sysctls(namespace: str, keys: Iterable[str]) -> dict[str, str]:
    with ns.inside(namespace):  # /proc/sys/net shows the namespace of the reading thread
        return _sysctl_values(keys)


# Writes KEY VALUE pairs (paths under /proc/sys) from inside the namespace: a mount namespace of its own
# makes /proc/sys/net alone writable (a container's /proc/sys is read-only), and /proc/sys/net shows the
# network namespace of the reader, which is sk-client from before this process started: the host's
# own sysctls are never reachable, let alone writable, from here.
WRITE_SYSCTLS = """
mount --bind /proc/sys/net /proc/sys/net && mount -o remount,bind,rw /proc/sys/net || exit
while [ $# -gt 0 ]; do printf '%s\\n' "$2" >"$1" || exit; shift 2; done
"""


def _ensure_sysctls(namespace: str, wanted: dict[str, str]) -> list[str]:
    present = read_sysctls(namespace, wanted)
    changed = {key: value for key, value in wanted.items() if present[key] != value}
    if changed:
        pairs = [str(part) for key, value in changed.items() for part in (_sysctl_path(key), value)]
        done = ns.run(namespace, ["unshare", "--mount", "--propagation", "private", "sh", "-c", WRITE_SYSCTLS,
                                  "sh", *pairs], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise TopologyError(f"cannot set {', '.join(f'{k}={v}' for k, v in changed.items())} in {namespace}: "
                                f"{done.stderr.strip()} (in a container: CAP_SYS_ADMIN is needed)")
    return [f"set {key}={value} in {namespace}" for key, value in changed.items()]


def _ensure_veth(topo: Topology) -> list[str]:
    found = []
    for namespace, ifname, _ in topo.ends():
        with _ipr(namespace) as ipr:
            link = _find_link(ipr, ifname)
        if link is not None and (_link_kind(link) != "veth" or _attr(link, "IFLA_IFALIAS") != OWNER_ALIAS):
            raise TopologyError(
                f"interface {ifname} in namespace {namespace} exists but is not swissknife's veth; "
                "remove it or choose another name with --server-if/--client-if"
            )
        found.append(link is not None)
    if all(found):
        return []
    changes = []
    if any(found):
        # Half a pair (its peer was renamed or moved away): start the pair afresh.
        namespace, ifname, _ = topo.ends()[found.index(True)]
        with _ipr(namespace) as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname=ifname)[0])
        changes.append(f"removed unpaired {ifname} from {namespace}")
    with _ipr() as ipr:
        try:
            ipr.link(
                "add",
                ifname=topo.server_if,
                kind="veth",
                net_ns_fd=topo.server_ns,
                peer={"ifname": topo.client_if, "net_ns_fd": topo.client_ns},
            )
        except NetlinkError as err:
            if err.code == errno.EOPNOTSUPP:
                raise TopologyError("this kernel has no veth support: load it with `modprobe veth`") from err
            if err.code == errno.EEXIST:
                raise TopologyError(
                    f"cannot create {topo.server_if}/{topo.client_if}: a link of that name already exists"
                ) from err
            raise
    for namespace, ifname, _ in topo.ends():  # mark both ends ours at once: a later failure must not orphan them
        with _ipr(namespace) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], ifalias=OWNER_ALIAS)
    return changes + [f"created veth pair {topo.server_if} ({topo.server_ns}) <-> {topo.client_if} ({topo.client_ns})"]


def _ensure_end(ipr: IPRoute, namespace: str, ifname: str, address: str, topo: Topology) -> list[str]:
    changes = []
    link = _find_link(ipr, ifname)
    index = link["index"]
    if _attr(link, "IFLA_MTU") != topo.mtu:
        ipr.link("set", index=index, mtu=topo.mtu)
        changes.append(f"set mtu {topo.mtu} on {ifname}")
    wanted = (address, topo.prefix)
    present = _global_addresses(ipr, index)
    for stray in (a for a in present if a != wanted):
        ipr.addr("del", index=index, address=stray[0], prefixlen=stray[1])
        changes.append(f"removed stray address {stray[0]}/{stray[1]} from {ifname}")
    if wanted not in present:
        ipr.addr("add", index=index, address=address, prefixlen=topo.prefix, flags=IFA_F_NODAD)
        changes.append(f"added {address}/{topo.prefix} to {ifname}")
    for up_index, name in ((index, ifname), (ipr.link_lookup(ifname="lo")[0], "lo")):
        if not ipr.get_links(up_index)[0]["flags"] & IFF_UP:
            ipr.link("set", index=up_index, state="up")
            changes.append(f"brought {name} up in {namespace}")
    return changes


def _ensure_shaping(ipr: IPRoute, ifname: str, shaping: Shaping) -> list[str]:
    index = ipr.link_lookup(ifname=ifname)[0]
    current = _root_qdisc(ipr, index)
    ours = current in ("tbf", "netem")
    if ours:
        # Shaping is reapplied from scratch: `up` leaves exactly what it was asked for.
        ipr.tc("del", index=index, root=True)
    if shaping.wants_netem:
        netem = {"delay": _usec(shaping.delay) if shaping.delay else 0}
        if shaping.loss:
            netem["loss"] = float(shaping.loss.rstrip("%"))
        ipr.tc("add", "netem", index, handle=SHAPING_HANDLE, **netem)
        if shaping.rate:
            ipr.tc("add", "tbf", index, parent=SHAPING_HANDLE, handle=0x20000, **_tbf(shaping.rate))
    elif shaping.rate:
        ipr.tc("add", "tbf", index, handle=SHAPING_HANDLE, **_tbf(shaping.rate))
    wanted = shaping.wants_netem or shaping.rate is not None
    if ours and not wanted:
        return [f"removed {current} shaping from {ifname}"]
    if wanted:
        return [f"shaping on {ifname}: {_describe(shaping)}"]
    return []


def _tbf(rate: str) -> dict:
    return {"rate": rate, "burst": 32 * 1024, "latency": 50 * 1000}


def _usec(duration: str) -> int:
    units = {"us": 1, "ms": 1000, "s": 1_000_000}
    for suffix in ("us", "ms", "s"):
        if duration.endswith(suffix):
            return int(float(duration[: -len(suffix)]) * units[suffix])
    return int(float(duration) * 1000)  # bare numbers are milliseconds


def _describe(shaping: Shaping) -> str:
    return ", ".join(f"{k} {v}" for k, v in asdict(shaping).items() if v is not None)


def down(topo: Topology) -> tuple[list[str], list[str]]:
    """Remove what `up` made; returns (removed, refused)."""
    removed, refused = [], []
    for name in (topo.server_ns, topo.client_ns):
        state = _namespace_state(name)
        if state == "ours":
            netns.remove(name)  # takes its end of the veth (and so the pair) with it
            removed.append(f"removed namespace {name}")
        elif state == "foreign":
            refused.append(f"namespace {name} was not created by swissknife; left in place")
    return removed, refused


def _link_status(namespace: str, ifname: str) -> LinkStatus:
    status = LinkStatus(name=ifname, namespace=namespace)
    if namespace not in netns.listnetns():
        return status
    with _ipr(namespace) as ipr:
        link = _find_link(ipr, ifname)
        if link is None:
            return status
        stats = _attr(link, "IFLA_STATS64")
        status.present = True
        status.owned = _attr(link, "IFLA_IFALIAS") == OWNER_ALIAS
        status.kind = _link_kind(link)
        status.state = _attr(link, "IFLA_OPERSTATE", "")
        status.mtu = _attr(link, "IFLA_MTU", 0)
        status.addresses = [f"{a}/{p}" for a, p in _global_addresses(ipr, link["index"])]
        status.qdisc = _root_qdisc(ipr, link["index"])
        for counter in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"):
            setattr(status, counter, stats[counter])
    return status


def counters(topo: Topology) -> dict[str, int]:
    """rx/tx bytes and packets of the server end (swissknife0)."""
    link = _link_status(topo.server_ns, topo.server_if)
    if not link.present:
        raise TopologyError(f"{topo.server_if} not found in {topo.server_ns}")
    return {k: getattr(link, k) for k in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")}


def status(topo: Topology, probe: bool = True) -> TopologyStatus:
    namespaces = {name: _namespace_state(name) for name in (topo.server_ns, topo.client_ns)}
    links = [_link_status(namespace, ifname) for namespace, ifname, _ in topo.ends()]
    problems = [f"namespace {n} is {s}" for n, s in namespaces.items() if s != "ours"]
    for link, (_, _, address) in zip(links, topo.ends(), strict=False):
        if not link.present:
            problems.append(f"{link.name} missing in {link.namespace}")
            continue
        if link.state not in ("UP", "UNKNOWN"):
            problems.append(f"{link.name} is {link.state or 'down'}")
        if f"{address}/{topo.prefix}" not in link.addresses:
            problems.append(f"{link.name} lacks {address}/{topo.prefix}")
    client_sysctls = read_sysctls(topo.client_ns, CLIENT_SYSCTLS) if namespaces[topo.client_ns] == "ours" else {}
    problems += [f"{key} is {client_sysctls[key]!r} in {topo.client_ns}, not {value!r}"
                 for key, value in CLIENT_SYSCTLS.items() if client_sysctls and client_sysctls[key] != value]
    reachable, reachability = False, "not checked"
    if probe and not problems:
        reachable, reachability = tcp_probe(topo)
        if not reachable:
            problems.append(reachability)
    return TopologyStatus(namespaces, links, client_sysctls, reachable, reachability, problems)


def tcp_probe(topo: Topology, payload: bytes = b"swissknife-probe", timeout: float = 2.0) -> tuple[bool, str]:
    """A real TCP exchange from the client namespace to the server address and back."""
    try:
        with ns.inside(topo.server_ns):
            listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        with closing(listener):
            listener.bind((topo.server_addr, 0))
            listener.listen(1)
            listener.settimeout(timeout)
            port = listener.getsockname()[1]
            with ns.inside(topo.client_ns):
                client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            with closing(client):
                client.settimeout(timeout)
                client.connect((topo.server_addr, port))
                client.sendall(payload)
                accepted, _ = listener.accept()
                with closing(accepted):
                    accepted.settimeout(timeout)
                    accepted.sendall(_recv_exactly(accepted, len(payload)))
                echoed = _recv_exactly(client, len(payload))
    except OSError as err:
        return False, f"TCP from {topo.client_ns} to [{topo.server_addr}] failed: {err}"
    if echoed != payload:
        return False, f"TCP echo from [{topo.server_addr}] returned {echoed!r}"
    return True, f"TCP {topo.client_ns} -> [{topo.server_addr}]:{port} echoed {len(payload)} bytes"


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data
