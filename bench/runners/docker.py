"""The docker runner: each server and each wrk run in its own container, joined to a namespace.

Containers come from one image (env SWISSKNIFE_IMAGE, default swissknife:latest)
and are started, watched and removed through the Docker SDK for Python. Each
runs in the host's network namespace with the host's /run/netns (rslave) and
enters sk-server or sk-client with the image's docker/in-netns.sh (nsenter:
CAP_SYS_ADMIN, the only capability added, and CAP_SYSLOG for perf's kernel
symbols in the server's), pinned with a cpuset. CPU figures come from the
container's cgroup, so they cover every process inside it. perf runs inside the
server's container (python3 -m bench.profiling), where the interpreter's perf
maps are, and the flame graphs are copied out of it.

Every container is labelled with its role, its run and the bench that owns it;
at start, the containers of a bench that is gone (crashed, killed) are removed,
those of a bench still running are left alone.

No host path is bind-mounted except /run/netns: nginx's files are copied into
the server container, so bench works the same on the host and inside the
compose `bench` container.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import shutil
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.types import Mount, Ulimit

import docker
from bench.config import cpu_list
from bench.errors import BenchError, PointFailed
from bench.network import Namespaces, Network
from bench.procfs import stat_or_none
from bench.profiling import ProfileResult, PythonSupport, SyscallCount
from bench.runners.base import (
    LOG_TAIL_CHARS,
    REPO_ROOT,
    STOP_GRACE_S,
    ServerUsage,
    WrkRun,
    profiled_support,
    server_command,
)
from netns.config import Topology
from netns.ns import NETNS_RUN_DIR

IMAGE_ENV = "SWISSKNIFE_IMAGE"
DEFAULT_IMAGE = "swissknife:latest"
IMAGE_VERSIONS = "/etc/swissknife-versions.json"  # written at image build time (docker/Dockerfile)
ROLE_LABEL = "swissknife.role"  # server | wrk | probe: what every container of ours carries
RUN_LABEL = "swissknife.run"  # the runner that started it
OWNER_LABEL = "swissknife.owner"  # the bench behind that runner: container:ID or process:PIDNS:PID:START
COMPOSE_LABELS = ("com.docker.compose.project", "com.docker.compose.service")
# The scratch directory keeps its path inside the container, whose /tmp exists:
# nginx's config names files by absolute path.
SCRATCH_PARENT = "/tmp"
NS_PER_S = 1e9
SERVER_CAPS = ["SYS_ADMIN", "SYSLOG"]  # nsenter and perf; perf's kernel symbols
PROFILE_DIR = "/tmp/swissknife-profile"  # inside the server's container


@dataclass(frozen=True)
class ContainerCpu:
    user_s: float
    sys_s: float


class DockerRunner:
    """Servers and wrk in containers of the swissknife image, one container per server start and per wrk run."""

    name = "docker"

    def __init__(self, topo: Topology, server_cpus: tuple[int, ...], client_cpu: int) -> None:
        self.topo = topo
        self.server_cpus = server_cpus
        self.client_cpu = client_cpu
        self.image_name = os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)
        self.run_id = uuid.uuid4().hex[:12]
        try:
            # No read timeout: a wrk exec sends nothing until wrk ends; run_wrk sets its own deadline.
            self._client = docker.from_env(timeout=None)
        except DockerException as error:
            raise BenchError(f"no Docker daemon answers ({error}); start one: sudo docker/install-engine.sh") from None
        self._server: Container | None = None
        self._support: PythonSupport | None = None  # how the running server shows Python to perf; None: not profiled

    def check(self) -> None:
        try:
            self._image = self._client.images.get(self.image_name)
        except ImageNotFound:
            raise BenchError(f"image {self.image_name} not found; build it: sudo docker/build.sh") from None
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Remove the containers a crashed or killed bench left behind; a live bench's stay (and disturb us)."""
        for container in self._client.containers.list(all=True, filters={"label": ROLE_LABEL}):
            labels = container.labels
            what = f"{labels[ROLE_LABEL]} container {container.short_id} of run {labels.get(RUN_LABEL, '?')}"
            if self._owner_alive(labels.get(OWNER_LABEL, "")):
                print(f"bench: warning: another bench is running ({what}); both runs' figures suffer",
                      file=sys.stderr)
                continue
            print(f"bench: removing leftover {what}", file=sys.stderr)
            _remove(container)

    def _owner_alive(self, owner: str) -> bool:
        kind, _, ident = owner.partition(":")
        if kind == "container":
            try:
                return self._client.containers.get(ident).status == "running"
            except NotFound:
                return False
        if kind == "process":
            pid_namespace, pid, start = ident.split(":")
            # A process of another PID namespace cannot be looked up from here: assume it lives.
            return pid_namespace != _pid_namespace() or _start_ticks(int(pid)) == start
        return False  # unlabelled: made by hand, or by an older bench

    @cached_property
    def _baked_versions(self) -> dict:
        out = self._client.containers.run(self._image.id, ["cat", IMAGE_VERSIONS], remove=True,
                                          labels=self._labels("probe"))
        return json.loads(out)

    def versions(self) -> dict[str, str]:
        return self._baked_versions["tools"]

    def image(self) -> dict | None:
        return {"id": self._image.id, "name": self.image_name, **self._baked_versions}

    @property
    def _project(self) -> str:
        """Where the image holds the project (its working directory)."""
        return self._image.attrs["Config"]["WorkingDir"]

    def _labels(self, role: str) -> dict[str, str]:
        # Blank the labels `docker compose build` stamps on the image: containers inherit them,
        # and compose would take ours for its `bench` service (`up` aborts when one exits).
        return {**dict.fromkeys(COMPOSE_LABELS, ""), ROLE_LABEL: role, RUN_LABEL: self.run_id, OWNER_LABEL: OWNER}

    def _create(self, role: str, namespace: str, cpus: Sequence[int], command: Sequence[str]) -> Container:
        """A container running `command` inside `namespace`, pinned to `cpus`, not yet started."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # bench's own, as the process runner's children
        return self._client.containers.create(
            self._image.id, [f"{self._project}/docker/in-netns.sh", namespace, *command],
            labels=self._labels(role), network_mode="host", cpuset_cpus=cpu_list(cpus),
            cap_add=SERVER_CAPS if role == "server" else ["SYS_ADMIN"],
            mounts=[Mount(NETNS_RUN_DIR, NETNS_RUN_DIR, type="bind", propagation="rslave")],
            ulimits=[Ulimit(name="nofile", soft=soft, hard=hard)],
        )

    def start_server(self, kind: str, host: str, port: int, profiled: bool = False) -> None:
        self.stop_server()
        self._support = profiled_support(kind, self._python_support) if profiled else None
        scratch = Path(tempfile.mkdtemp(prefix=f"swissknife-{kind}-", dir=SCRATCH_PARENT))
        try:
            command = server_command(kind, host, port, scratch, "python3", self._support.args if self._support else ())
            self._server = self._create("server", self.topo.server_ns, self.server_cpus, command)
            self._server.put_archive(SCRATCH_PARENT, _tar(scratch))
        finally:
            shutil.rmtree(scratch)
        self._server.start()

    def server_exit_code(self) -> int | None:
        if self._server is None:
            return None
        self._server.reload()
        state = self._server.attrs["State"]
        return None if state["Running"] else state["ExitCode"]

    def server_log(self) -> str:
        if self._server is None:
            return ""
        return self._server.logs().decode(errors="replace")[-LOG_TAIL_CHARS:].strip()

    def server_usage(self) -> ServerUsage:
        if self._server is None or self.server_exit_code() is not None:
            raise PointFailed("the server is not running")
        stats = self._server.stats(stream=False, one_shot=True)
        memory = stats["memory_stats"]
        cpu = _cpu(stats)
        return ServerUsage(
            cpu_user_s=cpu.user_s, cpu_sys_s=cpu.sys_s,
            # The cgroup's peak (cgroup v1; v2 keeps none, so its current usage): page cache charged
            # to the container counts too, unlike the process runner's sum of VmHWM.
            peak_rss_kib=memory.get("max_usage", memory["usage"]) // 1024,
            processes=stats["pids_stats"]["current"],
        )

    def stop_server(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=round(STOP_GRACE_S))  # the API takes whole seconds
            self._server.remove(force=True)
            self._server = None
        self._support = None

    def _profiling(self, container: Container | None, *args: str) -> dict:
        """bench.profiling's answer from inside `container`, or from a probe container with the server's
        capabilities."""
        command = ["python3", "-m", "bench.profiling", *args]
        if container is None:
            out = self._client.containers.run(self._image.id, command, remove=True, cap_add=SERVER_CAPS,
                                              labels=self._labels("probe"))
        else:
            out = container.exec_run(command, demux=True).output[0]
        return json.loads(out)

    @cached_property
    def _python_support(self) -> PythonSupport:
        found = self._profiling(None, "support", "python3")
        return PythonSupport(tuple(found["args"]), found["method"], found["reason"])

    def perf_problem(self) -> str | None:
        return self._profiling(None, "problem")["problem"]

    def count_syscalls(self, duration_s: float) -> SyscallCount:
        return SyscallCount(**self._profiling(self._server, "syscalls", str(duration_s)))

    def profile(self, duration_s: float, out_dir: Path, name: str) -> ProfileResult:
        if self._support is None:
            raise BenchError("profile() needs a server started with profiled=True")
        found = self._profiling(self._server, "profile", str(duration_s), PROFILE_DIR, name,
                                json.dumps(asdict(self._support)))
        result = ProfileResult(**found | {"svg": None, "folded": None})
        if found["svg"]:
            result.svg, result.folded = (self._copy_out(found[key], out_dir) for key in ("svg", "folded"))
        return result

    def _copy_out(self, path: str, out_dir: Path) -> Path:
        """A file of the server's container, copied into `out_dir`."""
        stream, _ = self._server.get_archive(path)
        out_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            archive.extractall(out_dir, filter="data")
        return out_dir / Path(path).name

    def run_wrk(self, args: Sequence[str], timeout_s: float) -> list[WrkRun]:
        # The container idles; wrk runs in it as an exec, so its cgroup still holds wrk's CPU after wrk ends.
        container = self._create("wrk", self.topo.client_ns, (self.client_cpu,), ["sleep", "infinity"])
        # wrk's script is the image's copy of the project's.
        command = [f"{self._project}/docker/in-netns.sh", self.topo.client_ns,
                   *(arg.replace(str(REPO_ROOT), self._project) for arg in args)]
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            container.start()
            result = pool.submit(container.exec_run, command, demux=True).result(timeout=timeout_s)
            cpu = _cpu(container.stats(stream=False, one_shot=True))
        except TimeoutError:
            raise PointFailed(f"wrk still running {timeout_s:.0f} s after start; killed") from None
        finally:
            _remove(container)  # kills a hung wrk too, which ends the exec's stream
            pool.shutdown()
        stdout, stderr = (part.decode(errors="replace") if part else "" for part in result.output)
        return [WrkRun(stdout, stderr, result.exit_code, cpu.user_s + cpu.sys_s)]

    def network(self) -> Network:
        return Namespaces(self.topo)

    def engines(self) -> list[dict]:
        return []

    def stop(self) -> None:
        self.stop_server()
        for container in self._client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={self.run_id}"}):
            _remove(container)


def _remove(container: Container) -> None:
    try:
        container.remove(force=True)
    except APIError as error:
        if error.status_code not in (404, 409):  # gone, or being removed already (by another runner)
            raise


def _pid_namespace() -> str:
    return str(os.stat("/proc/self/ns/pid").st_ino)


def _start_ticks(pid: int) -> str | None:
    """When process `pid` started: with the pid, it names one process."""
    found = stat_or_none(pid)
    return None if found is None else str(found.start_ticks)


def _owner() -> str:
    """This bench: the container it runs in, which the Docker API can look up, else this host process."""
    # Docker bind-mounts the container's own /etc/hostname from its directory, named by its id.
    mounts = Path("/proc/self/mountinfo").read_text()
    if found := re.search(r"/containers/([0-9a-f]{64})/hostname /etc/hostname ", mounts):
        return f"container:{found[1]}"
    return f"process:{_pid_namespace()}:{os.getpid()}:{_start_ticks(os.getpid())}"


OWNER = _owner()


def _cpu(stats: dict) -> ContainerCpu:
    """User and system CPU of a container's cgroup so far (the API gives nanoseconds)."""
    usage = stats["cpu_stats"]["cpu_usage"]
    return ContainerCpu(usage["usage_in_usermode"] / NS_PER_S, usage["usage_in_kernelmode"] / NS_PER_S)


def _tar(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(directory, arcname=directory.name)
    return buffer.getvalue()
