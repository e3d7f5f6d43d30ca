"""Docker engines named on the command line: a base URL (unix://, tcp://, ssh://user@host) or a Docker context.

Everything goes through the Docker SDK: `DockerClient(base_url=...)` (ssh:// through paramiko, the
`docker[ssh]` extra), `DockerClient.from_context(name)` for contexts. A sweep over several engines
needs the same image on each: `check_image` compares its ID everywhere and names the command that
fixes a difference; `ship_image` copies it from one engine to another (`docker save` | `docker load`,
streamed through bench's host).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from docker.context import ContextAPI
from docker.errors import ImageNotFound

import docker
from bench.errors import BenchError

PROBE_TIMEOUT_S = 10  # an engine that has not answered by then is unreachable
SHIP_CHUNK = 4 << 20


@dataclass(frozen=True)
class Engine:
    """One Docker engine and a client to it."""

    spec: str  # as given: a base URL or a context name
    client: docker.DockerClient

    @property
    def is_context(self) -> bool:
        return "://" not in self.spec

    def cli_env(self) -> str:
        """How the docker CLI (and docker/build.sh) is pointed at this engine."""
        return f"DOCKER_CONTEXT={self.spec}" if self.is_context else f"DOCKER_HOST={self.spec}"

    def describe(self, role: str) -> dict:
        """The daemon behind this engine, for results.json: what decides how its containers run and are measured
        (API version, cgroup version and driver, default seccomp profile and the other security options)."""
        info = self.client.info()
        return {"role": role, "engine": self.spec, "daemon_id": info["ID"], "host_name": info["Name"],
                "kernel": info["KernelVersion"], "cpus": info["NCPU"], "os": info["OperatingSystem"],
                "docker": info["ServerVersion"], "api_version": self.client.version()["ApiVersion"],
                "cgroup_version": info.get("CgroupVersion"),  # API 1.40+
                "cgroup_driver": info["CgroupDriver"], "seccomp_profile": seccomp_profile(info["SecurityOptions"]),
                "security_options": info["SecurityOptions"], "containerd": info["ContainerdCommit"]["ID"],
                "runc": info["RuncCommit"]["ID"]}

    def image_id(self, name: str) -> str | None:
        try:
            return self.client.images.get(name).id
        except ImageNotFound:
            return None


def seccomp_profile(security_options: list[str]) -> str | None:
    """The default seccomp profile named in `docker info`'s SecurityOptions ("name=seccomp,profile=builtin":
    builtin on Engine 25+, default before; a path when the daemon was given one); None: no seccomp."""
    for option in security_options:
        fields = dict(field.partition("=")[::2] for field in option.split(","))
        if fields.get("name") == "seccomp":
            return fields.get("profile")
    return None


@dataclass(frozen=True)
class Roles:
    """The engines of a run over several machines, connected, with the same image on each."""

    server: Engine
    clients: tuple[Engine, ...]  # one wrk each; the same engine may appear twice
    image_id: str
    server_addr: str  # on the server engine's host: the servers listen there, wrk loads it

    def describe(self) -> list[dict]:
        return [self.server.describe("server"), *(client.describe("client") for client in self.clients)]


def roles(server: str, clients: Sequence[str], image: str, server_addr: str) -> Roles:
    """Connect to every engine and check the image on each: BenchError (one line, the fix) before anything runs."""
    server_engine = connect(server)
    client_engines = tuple(connect(client) for client in clients)
    return Roles(server_engine, client_engines, check_image(image, server_engine, list(client_engines)), server_addr)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def connect(spec: str) -> Engine:
    """A client to the engine `spec` names, once it has answered; BenchError (one line) if it does not."""
    if "://" not in spec and ContextAPI.get_context(spec) is None:
        # from_context would quietly fall back to the local engine.
        raise BenchError(f"engine {spec}: no such Docker context (docker context ls), nor a unix:// tcp:// ssh:// URL")
    try:
        # The first client fails fast; the sweep's has no read timeout (a wrk exec answers only when wrk ends).
        if "://" in spec:
            probe = docker.DockerClient(base_url=spec, timeout=PROBE_TIMEOUT_S)
            probe.ping()
            client = docker.DockerClient(base_url=spec, timeout=None, version=probe.api.api_version)
        else:
            probe = docker.DockerClient.from_context(spec, timeout=PROBE_TIMEOUT_S)
            probe.ping()
            client = docker.DockerClient.from_context(spec, timeout=None, version=probe.api.api_version)
    # Docker, requests and paramiko each raise their own kinds; any of them means the same here.
    except Exception as error:
        raise BenchError(f"engine {spec} does not answer: {_one_line(error)}") from None
    probe.close()
    return Engine(spec, client)


def check_image(name: str, server: Engine, clients: list[Engine]) -> str:
    """The image's ID, the same on every engine; else BenchError saying exactly what to run."""
    reference = server.image_id(name)
    if reference is None:
        raise BenchError(f"image {name} not found on the server engine {server.spec}; build it there: "
                         f"{server.cli_env()} docker/build.sh")
    for client in clients:
        found = client.image_id(name)
        if found != reference:
            state = "not found" if found is None else f"is {found[:19]}, not the server engine's {reference[:19]}"
            raise BenchError(f"image {name} {state} on the client engine {client.spec}; copy it there: "
                             f"python3 -m bench ship-image --from {server.spec} --to {client.spec}")
    return reference


def ship_image(name: str, source: Engine, target: Engine) -> str:
    """Copy image `name` from `source` to `target` (save | load, streamed); the ID it has on both."""
    try:
        image = source.client.images.get(name)
    except ImageNotFound:
        raise BenchError(f"image {name} not found on {source.spec}") from None

    tag = next((tag for tag in image.tags if tag in (name, f"{name}:latest")), None)
    if tag is None:
        raise BenchError(f"ship-image copies a tagged image (such as swissknife:latest), not {name}")

    def chunks() -> Iterator[bytes]:
        yield from image.save(chunk_size=SHIP_CHUNK, named=tag)

    for message in target.client.api.load_image(chunks()):
        if "error" in message:
            raise BenchError(f"loading {name} into {target.spec} failed: {message['error']}")
        if stream := message.get("stream", "").strip():
            print(f"{target.spec}: {stream}", file=sys.stderr)
    loaded = target.image_id(name)
    if loaded != image.id:
        raise BenchError(f"after loading, {target.spec} has {name} as {loaded}, not {image.id}")
    return image.id
