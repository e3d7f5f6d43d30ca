"""The topology against real namespaces: netns/setup.py as a user runs it, as root.

Runs on the default names (sk-server/sk-client, swissknife0/1) because that is
what everything else uses; a topology that was up before the tests is up after.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netns import ns  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

SERVER_ADDR = "fd00:5a::1"
FOREIGN_NS = "sk-foreign-test"


def setup_cli(*args: str, python: str = sys.executable, user: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, str(ROOT / "netns" / "setup.py"), *args], capture_output=True, text=True, timeout=30, user=user
    )


def status_json() -> dict:
    return json.loads(setup_cli("status", "--json").stdout)


def namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}  # "name (id: N)"


def host_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


@pytest.fixture(autouse=True)
def restore_topology():
    was_up = ns.exists("sk-server") and ns.exists("sk-client")
    yield
    subprocess.run(["ip", "netns", "delete", FOREIGN_NS], capture_output=True)
    if was_up:
        assert setup_cli("up").returncode == 0


def test_lifecycle_up_status_traffic_repair_down() -> None:
    setup_cli("down")
    built = setup_cli("up")
    assert built.returncode == 0, built.stderr
    assert "created veth pair swissknife0 (sk-server) <-> swissknife1 (sk-client)" in built.stdout

    report = status_json()
    assert report["healthy"] and report["reachable"]
    server_end, client_end = report["links"]
    assert (server_end["name"], server_end["namespace"], server_end["addresses"]) == (
        "swissknife0", "sk-server", ["fd00:5a::1/64"])
    assert (client_end["name"], client_end["namespace"], client_end["addresses"]) == (
        "swissknife1", "sk-client", ["fd00:5a::2/64"])
    assert server_end["state"] == client_end["state"] == "UP"

    # A real TCP exchange from sk-client to a server process in sk-server moves the counters.
    payload_size = 1_000_000
    before = status_json()["links"][0]
    received = exchange(payload_size)
    after = status_json()["links"][0]
    assert received == payload_size
    assert after["rx_bytes"] - before["rx_bytes"] >= payload_size
    assert after["tx_bytes"] - before["tx_bytes"] >= payload_size  # echoed back
    assert after["rx_packets"] > before["rx_packets"]

    again = setup_cli("up")
    assert again.returncode == 0 and "already up, nothing to change" in again.stdout

    # Break it by hand; `up` repairs it.
    subprocess.run(["ip", "-n", "sk-server", "addr", "del", f"{SERVER_ADDR}/64", "dev", "swissknife0"], check=True)
    subprocess.run(["ip", "-n", "sk-client", "addr", "add", "fd00:5a::99/64", "dev", "swissknife1", "nodad"],
                   check=True)
    assert not status_json()["healthy"]
    repaired = setup_cli("up")
    assert "added fd00:5a::1/64 to swissknife0" in repaired.stdout
    assert "removed stray address fd00:5a::99/64 from swissknife1" in repaired.stdout
    assert status_json()["healthy"]

    subprocess.run(["ip", "netns", "delete", "sk-client"], check=True)
    assert setup_cli("status").returncode != 0
    repaired = setup_cli("up")
    assert "created namespace sk-client" in repaired.stdout
    assert status_json()["healthy"]

    # Down removes ours only: a foreign namespace survives.
    subprocess.run(["ip", "netns", "add", FOREIGN_NS], check=True)
    removed = setup_cli("down")
    assert removed.returncode == 0, removed.stdout
    assert not {"sk-server", "sk-client"} & namespaces()
    assert FOREIGN_NS in namespaces()
    assert "swissknife" not in host_links()
    assert "nothing of swissknife's to remove" in setup_cli("down").stdout


def sysctl(*args: str, namespace: str | None = None) -> str:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return subprocess.run([*prefix, "sysctl", "-n", *args], capture_output=True, text=True, check=True).stdout


def test_the_client_namespace_may_reuse_time_wait_ports_and_the_host_is_untouched() -> None:
    """Churn leaves every client port in TIME_WAIT: the client namespace reuses them and has 64k of them."""
    host_before = sysctl("net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_port_range")
    assert setup_cli("up").returncode == 0
    assert sysctl("net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_port_range", namespace="sk-client").split() == [
        "1", "1024", "65535"]
    assert sysctl("net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_port_range") == host_before
    assert status_json()["client_sysctls"] == {
        "net.ipv4.tcp_tw_reuse": "1", "net.ipv4.ip_local_port_range": "1024 65535"}

    subprocess.run(["ip", "netns", "exec", "sk-client", "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=2"], check=True)
    drifted = setup_cli("status")
    assert drifted.returncode == 1 and "net.ipv4.tcp_tw_reuse is '2' in sk-client, not '1'" in drifted.stdout
    repaired = setup_cli("up")
    assert repaired.stdout.splitlines()[:1] == ["set net.ipv4.tcp_tw_reuse=1 in sk-client"], repaired.stdout
    assert setup_cli("status").returncode == 0


def test_an_up_stopped_right_after_creating_the_pair_is_repaired_not_refused() -> None:
    """The ownership mark goes on with the pair, so a half-finished `up` is finished by the next one."""
    from netns import topology
    from netns.config import Topology

    assert setup_cli("down").returncode == 0
    topo = Topology()
    for name in (topo.server_ns, topo.client_ns):
        topology._ensure_namespace(name)
    topology._ensure_veth(topo)  # where an interrupted `up` may stop: no address, links down
    assert not status_json()["healthy"]
    repaired = setup_cli("up")
    assert repaired.returncode == 0, repaired.stderr
    assert "added fd00:5a::2/64 to swissknife1" in repaired.stdout
    assert status_json()["healthy"]


def exchange(size: int) -> int:
    """Send `size` bytes from sk-client to an echo process in sk-server; count what comes back."""
    echo = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET6); s.bind((sys.argv[1],0)); s.listen(1)\n"
        "print(s.getsockname()[1], flush=True)\n"
        "c,_=s.accept()\n"
        "while (d:=c.recv(65536)): c.sendall(d)\n"
    )
    server = ns.popen("sk-server", [sys.executable, "-c", echo, SERVER_ADDR], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        with ns.inside("sk-client"):
            client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        with client:
            client.settimeout(10)
            client.connect((SERVER_ADDR, port))
            client.sendall(b"x" * size)
            client.shutdown(socket.SHUT_WR)
            received = 0
            while chunk := client.recv(65536):
                received += len(chunk)
        return received
    finally:
        server.kill()
        server.wait()


def test_processes_run_inside_the_namespace() -> None:
    assert setup_cli("up").returncode == 0
    listing = "import socket; print(sorted(n for _, n in socket.if_nameindex()))"
    server_side = ns.run("sk-server", [sys.executable, "-c", listing], capture_output=True, text=True, check=True)
    client_side = ns.run("sk-client", [sys.executable, "-c", listing], capture_output=True, text=True, check=True)
    assert server_side.stdout.strip() == "['lo', 'swissknife0']"
    assert client_side.stdout.strip() == "['lo', 'swissknife1']"


def test_foreign_namespace_of_our_name_is_refused_and_kept() -> None:
    setup_cli("down")
    subprocess.run(["ip", "netns", "add", "sk-server"], check=True)
    try:
        refused_up = setup_cli("up")
        assert refused_up.returncode == 1
        assert "'sk-server' exists but was not created by swissknife" in refused_up.stderr
        refused_down = setup_cli("down")
        assert refused_down.returncode == 1
        assert "namespace sk-server was not created by swissknife; left in place" in refused_down.stdout
        assert "sk-server" in namespaces()
    finally:
        subprocess.run(["ip", "netns", "delete", "sk-server"], check=True)
        setup_cli("down")


def test_rate_shaping_is_applied_and_removed() -> None:
    shaped = setup_cli("up", "--rate", "10mbit")
    assert shaped.returncode == 0, shaped.stderr
    assert [link["qdisc"] for link in status_json()["links"]] == ["tbf", "tbf"]
    setup_cli("up")
    assert [link["qdisc"] for link in status_json()["links"]] == ["noqueue", "noqueue"]


def test_netem_on_a_kernel_without_it_changes_nothing() -> None:
    from netns.topology import NETEM_MISSING, netem_available

    if netem_available():
        pytest.skip("this kernel has sch_netem, so the missing-netem path cannot be shown here")
    setup_cli("down")
    before = namespaces()
    result = setup_cli("up", "--delay", "10ms")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {NETEM_MISSING}"
    assert namespaces() == before


def test_custom_names_and_addresses() -> None:
    custom = ["--server-ns", "skt-a", "--client-ns", "skt-b", "--server-if", "sktest0", "--client-if", "sktest1",
              "--server-addr", "fd00:5b::1", "--client-addr", "fd00:5b::2", "--mtu", "9000"]
    try:
        assert setup_cli("up", *custom).returncode == 0
        report = json.loads(setup_cli("status", "--json", *custom).stdout)
        assert report["healthy"]
        assert [link["mtu"] for link in report["links"]] == [9000, 9000]
        assert report["links"][0]["addresses"] == ["fd00:5b::1/64"]
    finally:
        assert setup_cli("down", *custom).returncode == 0
    assert not {"skt-a", "skt-b"} & namespaces()


def test_extra_client_addresses_are_kept_by_up_listed_by_status_and_removed_by_down() -> None:
    """On custom names, so the default topology stays up."""
    from netns.config import Topology
    from netns.topology import add_client_addresses

    custom = ["--server-ns", "skt-c", "--client-ns", "skt-d", "--server-if", "sktest2", "--client-if", "sktest3",
              "--server-addr", "fd00:5c::1", "--client-addr", "fd00:5c::2"]
    topo = Topology("skt-c", "skt-d", "sktest2", "sktest3", "fd00:5c::1", "fd00:5c::2")
    try:
        assert setup_cli("up", *custom).returncode == 0
        added = add_client_addresses(topo, 2)
        assert added == ["fd00:5c::5a5a:0:1", "fd00:5c::5a5a:0:2"] and add_client_addresses(topo, 2) == added
        subprocess.run(["ip", "-n", "skt-d", "addr", "add", "fd00:5c::99/64", "dev", "sktest3", "nodad"], check=True)
        report = json.loads(setup_cli("status", "--json", *custom).stdout)
        client_end = report["links"][1]
        assert client_end["extra_addresses"] == [f"{a}/128" for a in added]
        assert report["problems"] == ["stray address fd00:5c::99/64 on sktest3 (up removes it)"]
        repaired = setup_cli("up", *custom)
        assert repaired.stdout.splitlines()[0] == "removed stray address fd00:5c::99/64 from sktest3", repaired.stdout
        report = json.loads(setup_cli("status", "--json", *custom).stdout)
        assert report["healthy"] and report["links"][1]["extra_addresses"] == [f"{a}/128" for a in added]
        # Deprecated, so a connection that binds nothing still leaves from the client address.
        listing = ns.run("skt-d", ["ip", "-6", "route", "get", "fd00:5c::1"], capture_output=True, text=True,
                         check=True).stdout
        assert "src fd00:5c::2 " in listing, listing
        removed = setup_cli("down", *custom)
        assert "removed 2 extra client address(es) from sktest3" in removed.stdout, removed.stdout
    finally:
        setup_cli("down", *custom)
    assert not {"skt-c", "skt-d"} & namespaces()


def test_not_root_says_how() -> None:
    # The system interpreter: a user without root may not be able to read a venv under /root.
    result = setup_cli("up", python="/usr/bin/python3", user=65534)
    assert result.returncode == 2
    assert "need root: sudo python3 netns/setup.py up" in result.stderr


def test_wrong_arguments_say_what_is_allowed() -> None:
    result = setup_cli("sideways")
    assert result.returncode == 2
    assert "invalid choice: 'sideways'" in result.stderr


def test_up_and_down_are_quick() -> None:
    """Not a timing assertion: prints the measured times for the record."""
    setup_cli("down")
    started = time.perf_counter()
    assert setup_cli("up").returncode == 0
    up_seconds = time.perf_counter() - started
    started = time.perf_counter()
    assert setup_cli("down").returncode == 0
    print(f"up {up_seconds:.3f} s, down {time.perf_counter() - started:.3f} s (including interpreter start)")
