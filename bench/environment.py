"""Facts about the machine and software a run measured on, for results.json."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from bench.network import Namespaces, Network
from bench.runners import REPO_ROOT, Runner
from netns.topology import CLIENT_SYSCTLS, read_sysctls

IMAGE_VERSIONS = Path("/etc/swissknife-versions.json")  # written into the Docker image at build time


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_commit() -> str:
    if shutil.which("git") is None:  # the image has no git (nor .git): its id names the code
        return "unknown"

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True)
        return done.stdout.strip()
    commit = git("rev-parse", "HEAD") or "unknown"
    return f"{commit}-dirty" if git("status", "--porcelain", "--untracked-files=no") else commit


def collect(runner: Runner, net: Network) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    environment = {
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", "unknown"),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pyroute2": metadata.version("pyroute2"),
        "git_commit": git_commit(),
        "open_file_limit": {"soft": soft, "hard": hard},
        "runner": runner.name,
        "tools": runner.versions(),
        "server_python": runner.server_python(),  # the servers' interpreter, GIL state included
        "traffic": net.traffic,
    }
    if isinstance(net, Namespaces):
        environment["client_sysctls"] = read_sysctls(net.topo.client_ns, CLIENT_SYSCTLS)
    if engines := runner.engines():
        environment["engines"] = engines
    if image := runner.image():
        environment["image"] = image
    elif IMAGE_VERSIONS.exists():  # bench itself runs in the image
        environment["image"] = json.loads(IMAGE_VERSIONS.read_text())
    return environment
