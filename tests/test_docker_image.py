"""The swissknife image and the compose settings, against the real Docker engine.

Run as root on a host where `docker/install-engine.sh` and `docker/build.sh`
have run. Skipped, with the reason, when no Docker daemon answers. Containers
are started through the Docker SDK for Python with the settings read from
`docker compose config`, so the test checks what compose.yaml really says.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

docker = pytest.importorskip("docker", reason="the Docker SDK for Python (`docker`) is not installed")
from docker.types import Mount  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "swissknife:latest"
LABEL = "io.swissknife.test"  # every container started here carries it
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", re.S)


def _client():
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except Exception as err:  # any failure to reach the daemon means "skip"
        return err


_CLIENT = _client()
pytestmark = pytest.mark.skipif(
    not isinstance(_CLIENT, docker.DockerClient),
    reason=f"no Docker daemon answers ({_CLIENT}); start one with: sudo docker/install-engine.sh",
)


@pytest.fixture(scope="module")
def client():
    for leftover in _CLIENT.containers.list(all=True, filters={"label": LABEL}):
        leftover.remove(force=True)
    yield _CLIENT
    for container in _CLIENT.containers.list(all=True, filters={"label": LABEL}):
        container.remove(force=True)


@pytest.fixture(scope="module")
def image(client):
    try:
        return client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {IMAGE} is missing: build it with sudo docker/build.sh")


def run(client, command, **kwargs) -> str:
    """Run command in a fresh container of IMAGE; return its output, fail on non-zero exit."""
    kwargs.setdefault("labels", {LABEL: "1"})
    out = client.containers.run(IMAGE, command, remove=True, stdout=True, stderr=True, **kwargs)
    return out.decode(errors="replace")


def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is not on PATH: run sudo docker/install-engine.sh")
    return subprocess.run(["docker", "compose", *args], cwd=ROOT, capture_output=True, text=True,
                          check=check, timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def compose_config() -> dict:
    done = compose("config", "--format", "json", check=False)
    assert done.returncode == 0, f"docker compose config failed:\n{done.stderr}"
    return json.loads(done.stdout)


def sdk_settings(service: dict) -> dict:
    """Translate one compose service into Docker SDK keyword arguments."""
    mounts = [
        Mount(target=v["target"], source=v["source"], type="bind",
              propagation=v.get("bind", {}).get("propagation"))
        for v in service.get("volumes", []) if v["type"] == "bind"
    ]
    return {
        "network_mode": service["network_mode"],
        "cap_add": service.get("cap_add", []),
        "privileged": bool(service.get("privileged", False)),
        "pid_mode": service.get("pid"),
        "mounts": mounts,
        "working_dir": service.get("working_dir"),
        "labels": {LABEL: "1"},
    }


# --- the image --------------------------------------------------------------

def test_image_has_the_tools(client, image):
    wrk = run(client, ["sh", "-c", "wrk -v 2>&1 | head -n1"])  # wrk -v exits 1 after the banner
    assert wrk.startswith("wrk ") and "[epoll]" in wrk, wrk
    assert run(client, ["perf", "--version"]).startswith("perf version ")
    assert "nginx version: nginx/" in run(client, ["nginx", "-v"])
    for tool in ("ip", "nsenter", "strace", "ps"):
        assert run(client, ["sh", "-c", f"command -v {tool}"]).strip(), f"{tool} missing from the image"


def test_image_python_is_the_venv_with_the_pinned_packages(client, image):
    out = run(client, ["python3", "-c",
                       "import sys, pyroute2, docker, matplotlib, rich, jsonschema, pytest;"
                       "print(sys.executable, sys.version_info[:2])"])
    assert out.split()[0] == "/opt/venv/bin/python3"
    assert "(3, 13)" in out, "trixie's Python 3.13 is needed for Python frames in perf"


def test_versions_file_records_tools_and_pins(client, image):
    versions = json.loads(run(client, ["cat", "/etc/swissknife-versions.json"]))
    assert set(versions["tools"]) >= {"wrk", "perf", "nginx", "python"}
    assert all(re.fullmatch(r"\d+(\.\d+)+", v) for v in versions["tools"].values()), versions["tools"]
    installed = {name.lower(): version for name, version in versions["python_packages"].items()}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, pin = line.split("==", 1)
            name = name.split("[", 1)[0]  # docker[ssh]: the package is docker
            assert installed.get(name.strip().lower()) == pin.strip(), f"{name} is not at its pin {pin}"
    assert image.labels.get("io.swissknife.versions") == "/etc/swissknife-versions.json"


def test_perf_records_with_sys_admin_and_only_with_it(client, image):
    script = ("cd /tmp && perf record -q -e cpu-clock -o /tmp/p.data -- true"
              " && perf report -i /tmp/p.data --stdio -q | head -n3")
    out = run(client, ["sh", "-c", script], cap_add=["SYS_ADMIN", "SYSLOG"])
    assert "[k]" in out or "%" in out, out
    with pytest.raises(docker.errors.ContainerError):
        run(client, ["sh", "-c", "cd /tmp && perf record -q -e cpu-clock -o /tmp/p.data -- true"])


def _certs(blob: bytes) -> set[bytes]:
    return {b"".join(body.split()) for body in PEM.findall(blob)}


# Where the image keeps public CA certificates legitimately (Debian's and certifi's).
PUBLIC_CA_FILES = ("cat /etc/ssl/certs/ca-certificates.crt /usr/share/ca-certificates/*/*.crt; "
                   "find /opt/venv -name cacert.pem -exec cat {} +")


@pytest.mark.skipif(not HOST_CA_BUNDLE.exists(), reason=f"no host CA bundle at {HOST_CA_BUNDLE}")
def test_host_ca_bundle_is_not_baked_into_the_image(client, image):
    """The build saw the host's CA bundle (a BuildKit secret); no layer may hold it.

    The certificates that the host added to its bundle locally (a TLS-intercepting
    proxy's CA: in the bundle, but in no public CA set of the host or the image)
    must appear nowhere in the saved image's layers.
    """
    public = _certs(run(client, ["sh", "-c", PUBLIC_CA_FILES]).encode())
    for path in Path("/usr/share/ca-certificates").glob("*/*.crt"):  # the host's own public set
        public |= _certs(path.read_bytes())
    host_only = _certs(HOST_CA_BUNDLE.read_bytes()) - public
    if not host_only:
        pytest.skip("the host bundle holds no certificate beyond the public ones: nothing to look for")
    assert run(client, ["ls", "-A", "/run/secrets"]).strip() == "", "a secret was left in /run/secrets"
    needles = {cert[:64] for cert in host_only}  # a PEM file's first body line
    tail = b""
    for chunk in image.save(named=False):
        window = tail + chunk
        found = [n for n in needles if n in window]
        assert not found, (f"a certificate only the host trusts is inside {IMAGE} ({image.short_id}): "
                           f"{window[max(0, window.find(found[0]) - 300):window.find(found[0]) + 80]!r}"
                           if found else "")
        tail = window[-64:]


# --- compose ----------------------------------------------------------------

def test_compose_config_validates(compose_config):
    assert compose("config", "--quiet", check=False).returncode == 0


def test_compose_services_follow_the_namespace_rules(compose_config):
    services = compose_config["services"]
    assert set(services) >= {"bench", "server", "wrk", "netns"}
    for name, svc in services.items():
        assert svc["image"] == IMAGE, name
        assert svc["build"]["dockerfile"] == "docker/Dockerfile", name
        assert not svc.get("privileged"), f"{name} must not be privileged (it fails on this host)"
        assert svc.get("pid") is None, f"{name} shares the host PID namespace without need"
        # netns reaches the topology by setns alone; a namespace of its own keeps the host's net sysctls away
        assert svc["network_mode"] == ("none" if name == "netns" else "host"), name
        assert svc["security_opt"] == ["no-new-privileges"], name  # and no systempaths=unconfined
        assert "SYS_ADMIN" in svc["cap_add"], f"{name} cannot setns without SYS_ADMIN"
        assert "SYS_PTRACE" not in svc["cap_add"], name
        netns = [v for v in svc["volumes"] if v["target"] == "/run/netns"]
        want = "rshared" if name == "netns" else "rslave"
        assert netns and netns[0]["bind"]["propagation"] == want, name
        sockets = [v for v in svc["volumes"] if v["target"] == "/var/run/docker.sock"]
        assert bool(sockets) == (name == "bench"), f"only bench may hold the Docker socket, not {name}"
    assert services["bench"]["environment"]["BENCH_PROFILE"] == "quick"
    assert "NET_ADMIN" in services["bench"]["cap_add"], "bench adds the idle runs' extra client addresses"


def test_bench_entrypoint_maps_the_environment_and_keeps_the_exit_status(client, image, compose_config):
    """BENCH_* become `python3 -m bench` options, and the sweep's status is the container's."""
    entrypoint = compose_config["services"]["bench"]["entrypoint"]
    fake = ('mkdir -p /tmp/fake && printf \'#!/bin/sh\\necho "$*"\\nexit 7\\n\' >/tmp/fake/python3'
            ' && chmod +x /tmp/fake/python3')
    container = client.containers.run(
        IMAGE, ["-c", f'{fake} && PATH=/tmp/fake:$PATH exec {" ".join(entrypoint)} --out /tmp/x'],
        entrypoint=["sh"], detach=True, labels={LABEL: "1"},
        environment={"BENCH_PROFILE": "smoke", "BENCH_SERVERS": "epoll,poll", "BENCH_CONNECTIONS": "10 100",
                     "BENCH_DURATION": "2", "BENCH_REPEAT": "3", "BENCH_EXPERIMENTS": "idle-connections churn",
                     "BENCH_FLAMEGRAPHS": "1"})
    try:
        assert container.wait(timeout=60)["StatusCode"] == 7
        assert container.logs().decode().split() == [
            "-m", "bench", "--runner", "docker", "--profile", "smoke", "--servers", "epoll", "poll",
            "--connections", "10", "100", "--duration", "2", "--repeat", "3",
            "--experiments", "idle-connections", "churn", "--flamegraphs", "--out", "/tmp/x"]
    finally:
        container.remove(force=True)


SYS_ADMIN, SYSLOG = 1 << 21, 1 << 34  # capability bits (linux/capability.h)


def test_server_and_wrk_services_run_without_sys_admin_inside_their_limits(client, image, topology):
    """The processes under test lose SYS_ADMIN (and SYSLOG) once inside their namespace; an exec beside
    them (perf's way in) keeps the container's set; no-new-privileges, pids and memory limits hold."""
    tag = uuid.uuid4().hex[:6]
    names = {"server": f"swissknife-caps-server-{tag}", "wrk": f"swissknife-caps-wrk-{tag}"}
    port = "18" + str(uuid.uuid4().int % 900 + 100)
    try:
        assert subprocess.run(["docker", "compose", "run", "-d", "--name", names["server"], "server"], cwd=ROOT,
                              env={**os.environ, "SERVER_PORT": port}, capture_output=True, timeout=120,
                              stdin=subprocess.DEVNULL).returncode == 0
        for service, name in names.items():
            if service == "wrk":  # against the server, listening by now
                compose("run", "-d", "--name", name, "wrk", "-t1", "-c1", "-d30s", f"http://[fd00:5a::1]:{port}/")
            container = client.containers.get(name)
            host = container.attrs["HostConfig"]
            assert host["SecurityOpt"] == ["no-new-privileges"] and host["PidsLimit"] > 0 and host["Memory"] > 0
            status = ""
            for _ in range(50):  # in-netns.sh needs a moment to exec the command (bounded)
                code, out = container.exec_run(["cat", "/proc/1/status"])
                status = out.decode()
                ready = service == "wrk" or b"listening" in container.logs()
                if code == 0 and ("python3" if service == "server" else "wrk") in status.splitlines()[0] and ready:
                    break
                assert container.reload() or container.status == "running", container.logs()
                time.sleep(0.1)
            effective = int(re.search(r"^CapEff:\s*(\w+)", status, re.M)[1], 16)
            assert effective & (SYS_ADMIN | SYSLOG) == 0, (service, status)
            assert effective != 0, service  # Docker's default set stays (nginx's workers change user)
            code, out = container.exec_run(["grep", "CapEff", "/proc/self/status"])
            assert int(out.split()[1], 16) & SYS_ADMIN, (service, out)
    finally:
        for name in names.values():
            try:
                client.containers.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass


def test_in_netns_names_the_fix_when_a_namespace_is_missing(client, image, compose_config):
    settings = sdk_settings(compose_config["services"]["server"])
    container = client.containers.run(IMAGE, ["sk-missing-" + uuid.uuid4().hex[:6], "true"],
                                      entrypoint=["/opt/swissknife/docker/in-netns.sh"],
                                      detach=True, **settings)
    try:
        assert container.wait(timeout=60)["StatusCode"] == 2
        assert "sudo python3 netns/setup.py up" in container.logs().decode()
    finally:
        container.remove(force=True)


# --- joining the topology's namespaces ----------------------------------------

def test_container_with_compose_settings_joins_sk_server(client, image, compose_config, topology):
    settings = sdk_settings(compose_config["services"]["server"])
    out = run(client, ["sk-server", "ip", "-br", "addr"],
              entrypoint=["/opt/swissknife/docker/in-netns.sh"], **settings)
    assert re.search(r"^swissknife0@\S+\s+UP\s.*fd00:5a::1/64", out, re.M), out


def test_namespace_made_after_the_container_started_is_seen(client, image, compose_config, topology):
    """rslave propagation: a long-running container (bench) sees namespaces made later."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2's ip is not on the host")
    settings = sdk_settings(compose_config["services"]["bench"])
    settings["mounts"] = [m for m in settings["mounts"] if m["Target"] == "/run/netns"]
    container = client.containers.run(IMAGE, ["sleep", "60"], detach=True, **settings)
    name = "sk-dtest-" + uuid.uuid4().hex[:6]
    try:
        subprocess.run(["ip", "netns", "add", name], check=True)
        try:
            code, out = container.exec_run(["ls", "/run/netns"])
            assert code == 0 and name in out.decode().split(), out
        finally:
            subprocess.run(["ip", "netns", "del", name], check=True)
        code, out = container.exec_run(["ls", "/run/netns"])
        assert name not in out.decode().split()
    finally:
        container.remove(force=True)


def test_nginx_in_sk_server_serves_wrk_in_sk_client_across_the_veth(client, image, compose_config, topology):
    """The server and wrk services' settings carry real traffic over swissknife0."""
    nginx_conf = ("daemon off; worker_processes 1; pid /tmp/nginx.pid; error_log stderr; events {} "
                  "http { access_log off; server { listen [fd00:5a::1]:8089; "
                  "location / { return 200 'Hello, World!'; } } }")
    services = compose_config["services"]
    server = client.containers.run(
        IMAGE, ["sh", "-c", f'printf "%s\\n" "{nginx_conf}" >/tmp/n.conf && exec nginx -c /tmp/n.conf'],
        entrypoint=services["server"]["entrypoint"], detach=True, **sdk_settings(services["server"]))
    try:
        wrk = ["-t1", "-c4", "-d1s", "http://[fd00:5a::1]:8089/"]
        out = ""
        for _ in range(20):  # nginx needs a moment to bind; bounded
            try:
                out = run(client, wrk, entrypoint=services["wrk"]["entrypoint"], **sdk_settings(services["wrk"]))
            except docker.errors.ContainerError as err:
                out = str(err)
            if "Requests/sec" in out and "Socket errors: connect" not in out:
                break
        match = re.search(r"(\d+) requests in", out)
        assert match and int(match.group(1)) > 0, out
    finally:
        server.remove(force=True)


def test_compose_netns_service_reports_status(image, topology):
    done = compose("run", "--rm", "netns", "status", check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "swissknife0" in done.stdout


def test_compose_netns_service_builds_and_removes_a_topology_on_the_host(image):
    """`docker compose run --rm netns up|down` acts on the host (rshared), leaving nothing behind.

    Uses its own names and prefix so the default topology, if up, is untouched.
    """
    tag = uuid.uuid4().hex[:4]
    names = {"server-ns": f"skd{tag}-s", "client-ns": f"skd{tag}-c", "server-if": f"skd{tag}0",
             "client-if": f"skd{tag}1", "server-addr": "fd00:5d::1", "client-addr": "fd00:5d::2"}
    opts = [f"--{key}={value}" for key, value in names.items()]
    try:
        up = compose("run", "--rm", "netns", "up", *opts, check=False)
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        assert Path(f"/run/netns/{names['server-ns']}").exists(), "the namespace did not reach the host"
        assert compose("run", "--rm", "netns", "status", *opts, check=False).returncode == 0
    finally:
        down = compose("run", "--rm", "netns", "down", *opts, check=False)
    assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
    assert not any(Path(f"/run/netns/{names[k]}").exists() for k in ("server-ns", "client-ns"))
    assert f"skd{tag}" not in Path("/proc/self/mountinfo").read_text(), "a namespace mount was left behind"
    assert not Path(f"/sys/class/net/{names['server-if']}").exists()


def test_install_engine_is_idempotent():
    if os.geteuid() != 0:
        pytest.skip("docker/install-engine.sh runs as root")
    done = subprocess.run([str(ROOT / "docker" / "install-engine.sh")], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "installing" not in done.stdout and "starting dockerd" not in done.stdout, done.stdout
    assert "compose 2." in done.stdout
