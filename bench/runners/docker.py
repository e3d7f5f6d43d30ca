"""The docker runner: a container per (server, workload) and one long-lived wrk container per sweep.

Containers come from one image (env SWISSKNIFE_IMAGE, default swissknife:latest)
and are started, watched and removed through the Docker SDK for Python. Each
runs in the host's network namespace with the host's /run/netns (rslave),
pinned with a cpuset, with no-new-privileges and pids and memory limits that a
sweep never reaches. The image's docker/in-netns.sh enters sk-server or
sk-client (nsenter: CAP_SYS_ADMIN) and drops SYS_ADMIN and SYSLOG before the
server or wrk runs; perf, run as a `docker exec` beside the server
(python3 -m bench.profiling, where the interpreter's perf maps are), gets the
container's own set back: SYS_ADMIN, and SYSLOG for kernel symbols.

On one host the server's CPU, memory and processes are read as the process
runner reads its own: the process tree of the container's first process, in
the host's /proc (bench.procfs; the compose bench mounts it at /host/proc), so
both runners measure the same way and no stats call (a third of a second each
on Docker 20.10) sits between the runs; the engine is asked for the container's
state only once that process is gone.

Each wrk run is an exec in the sweep's wrk container, through
docker/cgroup-cpu.sh: it reads the container's cgroup CPU counters just before
and just after wrk, so wrk's CPU is a cgroup delta. The host's busy time and
the engine's CPU (bench.procfs: dockerd, containerd, shims, runc) are sampled
around the exec alone; the engine's share is reported apart from other load.

Every container is labelled with its role, its run and the bench that owns it;
at start, the containers of a bench that is gone (crashed, killed) are removed,
those of a bench still running are left alone.

No host path is bind-mounted except /run/netns: nginx's files are copied into
the server container, so bench works the same on the host and inside the
compose `bench` container.

Over several machines (engines.Roles: bench --server-engine/--client-engine)
the server's containers run on the server engine and one long-lived wrk
container on each client engine, all in their host's network (no namespaces,
no /run/netns mount; setpriv alone drops the capabilities). A point's wrk runs
are created first and then started together, one thread per engine. A probe
container on the server engine and the first wrk container answer the sweep's
network questions (bench.network.Machines).
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import sys
import tarfile
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from docker.errors import APIError, ContainerError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.types import Mount, Ulimit

import docker
from bench import procfs, subjects
from bench.config import cpu_list
from bench.errors import BenchError, PointFailed
from bench.network import Machines, Namespaces, Network
from bench.profiling import ProfileResult, PythonSupport, SyscallCount
from bench.runners.base import (
    FT_BUILD,
    FT_IMAGE,
    LOG_TAIL_CHARS,
    NAMED_PYTHONS,
    PYTHON_PROBE,
    REPO_ROOT,
    STOP_GRACE_S,
    LoadWindow,
    ServerUsage,
    WrkRun,
    probe_answer,
    profiled_support,
    resolve_python,
    server_command,
    tree_usage,
)
from bench.runners.engines import Engine, Roles
from netns.config import Topology
from netns.ns import NETNS_RUN_DIR

LOCAL_ENGINE = "unix:///var/run/docker.sock"  # docker.from_env()'s engine when DOCKER_HOST is unset
IMAGE_ENV = "SWISSKNIFE_IMAGE"
DEFAULT_IMAGE = "swissknife:latest"
FT_IMAGE_ENV = "SWISSKNIFE_FT_IMAGE"  # the image of the NAMED_PYTHONS (default swissknife-ft:latest)
IMAGE_VERSIONS = "/etc/swissknife-versions.json"  # written at image build time (docker/Dockerfile)
ROLE_LABEL = "swissknife.role"  # server | wrk | probe: what every container of ours carries
RUN_LABEL = "swissknife.run"  # the runner that started it
OWNER_LABEL = "swissknife.owner"  # the bench behind that runner: container:ID or process:PIDNS:PID:START
COMPOSE_LABELS = ("com.docker.compose.project", "com.docker.compose.service")
SCRATCH = "/tmp/swissknife-server"  # nginx's files, written inside the server's container (bench.nginx)
NS_PER_S = 1e9
SERVER_CAPS = ["SYS_ADMIN", "SYSLOG"]  # nsenter and perf; perf's kernel symbols (the server itself runs without)
WRK_CAPS = ["SYS_ADMIN"]  # nsenter (wrk itself runs without)
# Far above what a sweep needs (the threaded server holds a thread per connection, 10,000+ with
# idle-10000; its peak resident set was 240 MiB), low enough to stop a runaway before the host suffers.
LIMITS = {"server": {"pids_limit": 32768, "mem_limit": "4g"}, "wrk": {"pids_limit": 256, "mem_limit": "1g"},
          "probe": {"pids_limit": 256, "mem_limit": "1g"}}
SECURITY_OPT = ["no-new-privileges"]
# Docker Engine 25.0 (moby#46762) took io_uring out of its default seccomp profile: the io-uring
# server's container then runs without a seccomp filter; older engines' default lets io_uring through.
IO_URING_SECCOMP_ENGINE = 25
SUBJECT_DIR = "/subject"  # a user subject's folder, mounted read-only in its server's container ({dir})
PROFILE_DIR = "/tmp/swissknife-profile"  # inside the server's container
CGROUP_CPU_LINE = "swissknife-cgroup-cpu "  # docker/cgroup-cpu.sh's last line on stderr
DROPPED_CAPS = "-sys_admin,-syslog"  # what docker/in-netns.sh drops; over several machines setpriv alone does


@dataclass(frozen=True)
class ContainerCpu:
    user_s: float
    sys_s: float


class DockerRunner:
    """Servers and wrk in containers of the swissknife image: one per server start, one for every wrk run."""

    name = "docker"

    def __init__(self, topo: Topology, server_cpus: tuple[int, ...], client_cpu: int,
                 python: str = "python3", roles: Roles | None = None) -> None:
        self.topo = topo
        self.server_cpus = server_cpus
        self.client_cpu = client_cpu
        self.roles = roles  # None: this host's engine and its namespaces
        self.python = resolve_python(python)  # the servers' interpreter, a path inside the image
        # The named interpreters live in the free-threaded image, a superset of the default one.
        self.needs_ft_image = self.python in NAMED_PYTHONS.values()
        self.image_name = (os.environ.get(FT_IMAGE_ENV, FT_IMAGE) if self.needs_ft_image
                           else os.environ.get(IMAGE_ENV, DEFAULT_IMAGE))
        self.run_id = uuid.uuid4().hex[:12]
        if roles is None:
            try:
                # No read timeout: a wrk exec sends nothing until wrk ends; run_wrk sets its own deadline.
                self._client = docker.from_env(timeout=None)
            except DockerException as error:
                raise BenchError(f"no Docker daemon answers ({error}); start one: sudo docker/install-engine.sh") \
                    from None
            self._clients = [(None, self._client)]
            self._local = Engine(os.environ.get("DOCKER_HOST", LOCAL_ENGINE), self._client)
        else:
            self._client = roles.server.client
            self._clients = [(engine.spec, engine.client) for engine in roles.clients]
        self._server: Container | None = None
        self._root: procfs.ProcStat | None = None  # the server container's first process, in this host's /proc
        self._wrks: dict[int, Container] = {}  # per client: created at its first wrk run, removed by stop()
        self._probe: Container | None = None  # on the server engine, for the network's questions (several machines)
        self._support: PythonSupport | None = None  # how the running server shows Python to perf; None: not profiled

    def check(self) -> None:
        try:
            self._image = self._client.images.get(self.image_name)
        except ImageNotFound:
            build = f"--server-python {self.python} runs in it; build it: {FT_BUILD}" if self.needs_ft_image \
                else "build it: sudo docker/build.sh"
            raise BenchError(f"image {self.image_name} not found; {build}") from None
        for client in self._engines():
            self._remove_leftovers(client)
        if self.roles is None and not procfs.engine_cpu():
            raise BenchError(f"no container engine process (dockerd, containerd) in {procfs.host_proc()}: the docker "
                             f"runner measures the servers and the engine through the host's /proc; in a container, "
                             f"mount the host's /proc and name it in {procfs.HOST_PROC_ENV}")
        self.server_python()

    def _engines(self) -> list[docker.DockerClient]:
        """Every engine once (a client engine may be named twice, or be the server's)."""
        return list({id(client): client for client in [self._client, *(c for _, c in self._clients)]}.values())

    def _remove_leftovers(self, client: docker.DockerClient) -> None:
        """Remove the containers a crashed or killed bench left behind; a live bench's stay (and disturb us)."""
        for container in client.containers.list(all=True, filters={"label": ROLE_LABEL}):
            labels = container.labels
            what = f"{labels[ROLE_LABEL]} container {container.short_id} of run {labels.get(RUN_LABEL, '?')}"
            if self._owner_alive(client, labels.get(OWNER_LABEL, "")):
                print(f"bench: warning: another bench is running ({what}); both runs' figures suffer",
                      file=sys.stderr)
                continue
            print(f"bench: removing leftover {what}", file=sys.stderr)
            _remove(container)

    def _owner_alive(self, client: docker.DockerClient, owner: str) -> bool:
        kind, _, ident = owner.partition(":")
        if kind == "container":
            try:
                return client.containers.get(ident).status == "running"
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
                                          security_opt=SECURITY_OPT, labels=self._labels("probe"),
                                          **LIMITS["probe"])
        return json.loads(out)

    def versions(self) -> dict[str, str]:
        return self._baked_versions["tools"]

    def image(self) -> dict | None:
        return {"id": self._image.id, "name": self.image_name, **self._baked_versions}

    def server_python(self) -> dict:
        return self._server_python

    @cached_property
    def _server_python(self) -> dict:
        where = f"in image {self.image_name}"
        try:
            out = self._client.containers.run(self._image.id, [self.python, "-c", PYTHON_PROBE], remove=True,
                                              working_dir=self._project, labels=self._labels("probe"))
        except ContainerError as error:
            return probe_answer(self.python, where, error.exit_status, "", (error.stderr or b"").decode())
        except APIError as error:  # no such executable in the image
            return probe_answer(self.python, where, 127, "", error.explanation or str(error))
        return probe_answer(self.python, where, 0, out.decode(), "")

    @property
    def _project(self) -> str:
        """Where the image holds the project (its working directory)."""
        return self._image.attrs["Config"]["WorkingDir"]

    def _labels(self, role: str) -> dict[str, str]:
        # Blank the labels `docker compose build` stamps on the image: containers inherit them,
        # and compose would take ours for its `bench` service (`up` aborts when one exits).
        return {**dict.fromkeys(COMPOSE_LABELS, ""), ROLE_LABEL: role, RUN_LABEL: self.run_id, OWNER_LABEL: OWNER}

    def _create(self, role: str, cpus: Sequence[int] | None, command: Sequence[str], caps: list[str],
                client: docker.DockerClient | None = None, security_opt: Sequence[str] = (),
                image: str | None = None, mounts: Sequence[Mount] = ()) -> Container:
        """A container of ours on `client` (default: the server's engine) running `command`, pinned to `cpus`
        (None: unpinned), not yet started; from `image` (default: ours) with `mounts` added."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # bench's own, as the process runner's children
        # The namespaces are this host's: other machines' containers need no /run/netns.
        mounts = [*mounts, *([] if self.roles else
                             [Mount(NETNS_RUN_DIR, NETNS_RUN_DIR, type="bind", propagation="rslave")])]
        return (client or self._client).containers.create(
            image or self._image.id, list(command), labels=self._labels(role), network_mode="host",
            cpuset_cpus=cpu_list(cpus) if cpus else None, cap_add=caps, security_opt=[*SECURITY_OPT, *security_opt],
            **LIMITS[role], mounts=mounts, ulimits=[Ulimit(name="nofile", soft=soft, hard=hard)],
        )

    def _in_netns(self, namespace: str, command: Sequence[str], ours: bool = True) -> list[str]:
        """`command` in `namespace`, without the capabilities; over several machines in the host's network.
        Another image than ours has no docker/in-netns.sh: util-linux's nsenter and setpriv do the same."""
        drop = ["setpriv", f"--bounding-set={DROPPED_CAPS}", f"--inh-caps={DROPPED_CAPS}", "--", *command]
        if self.roles:
            return drop
        if not ours:
            return ["nsenter", f"--net={NETNS_RUN_DIR}/{namespace}", "--", *drop]
        return [f"{self._project}/docker/in-netns.sh", namespace, *command]

    @cached_property
    def engine_major(self) -> int:
        return int(self._client.version()["Version"].split(".")[0])

    def server_security(self, kind: str) -> list[str]:
        """Only for a subject that uses io_uring, and only on engines whose default seccomp profile blocks it."""
        blocked = subjects.get(kind).io_uring and self.engine_major >= IO_URING_SECCOMP_ENGINE
        return ["seccomp=unconfined"] if blocked else []

    def _subject_image(self, subject: subjects.Subject) -> str | None:
        """The image a subject names, checked on the server's engine (None: ours)."""
        if subject.image is None:
            return None
        try:
            return self._client.images.get(subject.image).id
        except ImageNotFound:
            raise PointFailed(f"image {subject.image} (subject {subject.name}) not found on the server's engine; "
                              "build or load it there") from None

    def start_server(self, kind: str, host: str, port: int, profiled: bool = False,
                     workers: int | None = None) -> None:
        self.stop_server()
        self._support = profiled_support(kind, self._python_support) if profiled else None
        python_args = self._support.args if self._support else ()
        subject = subjects.get(kind)
        image = self._subject_image(subject)
        folder = [Mount(SUBJECT_DIR, subject.directory, type="bind", read_only=True)] if subject.directory else []
        command = server_command(kind, host, port, Path(SCRATCH), self.python, python_args, workers,
                                 SUBJECT_DIR if folder else None)
        self._server = self._create("server", self.server_cpus,
                                    self._in_netns(self.topo.server_ns, command, ours=image is None),
                                    SERVER_CAPS, security_opt=self.server_security(kind), image=image, mounts=folder)
        self._server.start()
        if self.roles is None:
            self._server.reload()  # the one inspect: the first process's pid, in the host's PID namespace
            self._root = procfs.stat_or_none(self._server.attrs["State"]["Pid"], procfs.host_proc())

    def _root_running(self) -> bool:
        found = self._root and procfs.stat_or_none(self._root.pid, procfs.host_proc())
        return bool(found) and found.start_ticks == self._root.start_ticks and found.state != "Z"

    def server_exit_code(self) -> int | None:
        if self._server is None:
            return None
        if self.roles is None:  # this host's /proc answers without an API call while the server runs
            return None if self._root_running() else self._server.wait(timeout=STOP_GRACE_S)["StatusCode"]
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
        if self._root is not None:  # as the process runner measures: the process tree in the host's /proc
            return tree_usage(self._root.pid, procfs.host_proc())
        # Another machine's engine: its container's cgroup, through the API.
        stats = self._server.stats(stream=False, one_shot=True)
        memory = stats["memory_stats"]
        cpu = _cpu(stats)
        return ServerUsage(
            cpu_user_s=cpu.user_s, cpu_sys_s=cpu.sys_s,
            # The cgroup's peak (cgroup v1; v2 keeps none, so its current usage): page cache charged
            # to the container counts too, unlike the process runner's sum of VmHWM.
            peak_rss_kib=memory.get("max_usage", memory["usage"]) // 1024,
            processes=stats["pids_stats"]["current"],
            # The cgroup's anonymous memory (v1 calls it rss, v2 anon): the processes' resident sets less
            # their file pages.
            rss_kib=memory["stats"].get("rss", memory["stats"].get("anon", memory["usage"])) // 1024,
        )

    def stop_server(self) -> None:
        if self._server is not None:
            # One call: SIGKILL to the container's first process ends every process of its PID namespace.
            self._server.remove(force=True)
            self._server, self._root = None, None
        self._support = None

    def _profiling(self, container: Container | None, *args: str) -> dict:
        """bench.profiling's answer from inside `container`, or from a probe container with the server's
        capabilities."""
        command = ["python3", "-m", "bench.profiling", *args]
        if container is None:
            out = self._client.containers.run(self._image.id, command, remove=True, cap_add=SERVER_CAPS,
                                              security_opt=SECURITY_OPT, labels=self._labels("probe"),
                                              **LIMITS["probe"])
        else:
            out = container.exec_run(command, demux=True).output[0]
        return json.loads(out)

    @cached_property
    def _python_support(self) -> PythonSupport:
        found = self._profiling(None, "support", self.python)
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
        files = ("svg", "folded", "offcpu_svg", "offcpu_folded", "wall_svg")
        result = ProfileResult(**found | dict.fromkeys(files))
        for key in files:
            if found[key]:
                setattr(result, key, self._copy_out(found[key], out_dir))
        return result

    def _copy_out(self, path: str, out_dir: Path) -> Path:
        """A file of the server's container, copied into `out_dir`."""
        stream, _ = self._server.get_archive(path)
        out_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            archive.extractall(out_dir, filter="data")
        return out_dir / Path(path).name

    def _wrk_container(self, index: int) -> Container:
        """Client `index`'s wrk container: idle, pinned to the client CPU (of its machine); each wrk run is an
        exec in it."""
        if index not in self._wrks:
            _, client = self._clients[index]
            container = self._create("wrk", (self.client_cpu,), ["sleep", "infinity"], [] if self.roles else WRK_CAPS,
                                     client)
            container.start()
            self._wrks[index] = container
        return self._wrks[index]

    def run_wrk(self, args: Sequence[str], timeout_s: float) -> list[WrkRun]:
        # wrk's script is the image's copy of the project's.
        command = self._in_netns(self.topo.client_ns, [f"{self._project}/docker/cgroup-cpu.sh",
                                 *(arg.replace(str(REPO_ROOT), self._project) for arg in args)])
        # Every client's exec created first, then all started at once: the runs overlap as fully as they can.
        execs = []
        for index, (_, client) in enumerate(self._clients):
            container = self._wrk_container(index)
            execs.append((client.api, client.api.exec_create(container.id, command, stdout=True, stderr=True)["Id"]))
        pool = ThreadPoolExecutor(max_workers=len(execs))
        try:
            with LoadWindow() as load:
                started = [pool.submit(api.exec_start, exec_id, demux=True) for api, exec_id in execs]
                if wait(started, timeout=timeout_s).not_done:
                    raise TimeoutError
                outputs = [future.result() for future in started]
                # An exit code is known once the shim has reaped the exec: its CPU is in the shim's figures.
                returncodes = [api.exec_inspect(exec_id)["ExitCode"] for api, exec_id in execs]
        except TimeoutError:
            self._remove_wrks()  # kills the hung wrk, which ends the exec's stream; the next run makes a new one
            raise PointFailed(f"wrk still running {timeout_s:.0f} s after start; killed") from None
        finally:
            pool.shutdown()
        runs = []
        for (engine, _), output, returncode in zip(self._clients, outputs, returncodes, strict=True):
            stdout, stderr = (part.decode(errors="replace") if part else "" for part in output)
            stderr, cpu_s = _cgroup_cpu(stderr)
            if self.roles:  # other machines: this host's load says nothing of theirs
                runs.append(WrkRun(stdout, stderr, returncode, cpu_s, None, None, engine))
            else:  # the shim reaps the exec, so the engine's figures hold wrk's CPU too: take it out
                runs.append(WrkRun(stdout, stderr, returncode, cpu_s, load.host_busy_s,
                                   max(load.engine_cpu_s - cpu_s, 0.0)))
        return runs

    def _remove_wrks(self) -> None:
        for container in self._wrks.values():
            _remove(container)
        self._wrks = {}

    def _probe_container(self) -> Container:
        """An idle container on the server engine (its host network) for the network's questions."""
        if self._probe is None:
            self._probe = self._create("probe", None, ["sleep", "infinity"], [])
            self._probe.start()
        return self._probe

    @staticmethod
    def _network_command(container: Container, args: Sequence[str]) -> str:
        """python3 -m bench.network ARGS in `container`: its stdout."""
        result = container.exec_run(["python3", "-m", "bench.network", *args], demux=True)
        stdout, stderr = (part.decode(errors="replace") if part else "" for part in result.output)
        if result.exit_code != 0:
            raise PointFailed(f"python3 -m bench.network {' '.join(args)} failed: {stderr.strip()[-300:]}")
        return stdout

    def network(self) -> Network:
        if self.roles is None:
            return Namespaces(self.topo)
        return Machines(self.roles.server_addr,
                        on_server=lambda args: self._network_command(self._probe_container(), args),
                        on_client=lambda args: self._network_command(self._wrk_container(0), args))

    def engines(self) -> list[dict]:
        return self.roles.describe() if self.roles else [self._local.describe("local")]

    def stop(self) -> None:
        self.stop_server()
        self._remove_wrks()
        if self._probe is not None:
            _remove(self._probe)
            self._probe = None
        for client in self._engines():
            for container in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={self.run_id}"}):
                _remove(container)


def _cgroup_cpu(stderr: str) -> tuple[str, float]:
    """wrk's stderr without docker/cgroup-cpu.sh's line, and the CPU seconds that line reports."""
    head, found, tail = stderr.rpartition(CGROUP_CPU_LINE)
    if not found:
        raise PointFailed(f"no CPU figures from docker/cgroup-cpu.sh: {stderr.strip()[-300:]}")
    user_ns, sys_ns = map(int, tail.split())
    return head, (user_ns + sys_ns) / NS_PER_S


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
    found = procfs.stat_or_none(pid)
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
