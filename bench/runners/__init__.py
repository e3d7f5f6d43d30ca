"""The runners by name: `process` (plain processes in the namespaces) and `docker` (containers).

The docker runner is imported only when chosen: it needs the Docker SDK and an engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.runners.base import REPO_ROOT, Runner, ServerUsage, WrkRun
from bench.runners.process import ProcessRunner
from netns.config import Topology

if TYPE_CHECKING:
    from bench.runners.engines import Roles


def docker_runner(topo: Topology, server_cpus: tuple[int, ...], client_cpu: int, python: str = "python3",
                  roles: Roles | None = None) -> Runner:
    """`roles`: the server's and the clients' engines (several machines); None: this host's engine."""
    from bench.runners.docker import DockerRunner
    return DockerRunner(topo, server_cpus, client_cpu, python, roles)


RUNNERS = {ProcessRunner.name: ProcessRunner, "docker": docker_runner}

__all__ = ["REPO_ROOT", "RUNNERS", "ProcessRunner", "Runner", "ServerUsage", "WrkRun", "docker_runner"]
