"""Write the versions of the tools baked into the image as JSON on stdout.

Run once at image build time (docker/Dockerfile) into
/etc/swissknife-versions.json, so every results.json can copy the exact
versions of wrk, perf, nginx, Python and the Python packages that produced it.
Standard library only: it runs before the project is copied in.
"""
import json
import platform
import re
import subprocess
import sys
from importlib import metadata

# Debian packages whose versions matter for a benchmark's numbers.
DEBIAN_PACKAGES = ("wrk", "linux-perf", "nginx", "python3", "iproute2",
                   "util-linux", "procps", "strace", "libc6")


def run(cmd):
    """Return stdout+stderr of cmd (wrk -v and nginx -v print to stderr)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return (proc.stdout + proc.stderr).strip()


def first_version(text):
    match = re.search(r"\d+(?:\.\d+)+", text)
    if match is None:
        raise SystemExit(f"versions.py: no version number in {text!r}")
    return match.group(0)


def os_release():
    fields = {}
    with open("/etc/os-release", encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.strip().partition("=")
            if key:
                fields[key] = value.strip('"')
    return fields.get("PRETTY_NAME", "unknown")


def debian_packages():
    out = run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\n",
               *DEBIAN_PACKAGES])
    return dict(line.split("\t", 1) for line in out.splitlines()
                if "\t" in line)


def main():
    wrk = run(["wrk", "-v"]).splitlines()[0]  # "wrk 4.1.0 [epoll] ..."
    perf = run(["perf", "--version"])        # "perf version 6.12.x"
    nginx = run(["nginx", "-v"])             # "nginx version: nginx/1.26.3"
    versions = {
        "os": os_release(),
        "tools": {
            "wrk": first_version(wrk),
            "perf": first_version(perf),
            "nginx": first_version(nginx),
            "python": platform.python_version(),
        },
        "python_implementation": sys.version,
        "debian_packages": debian_packages(),
        "python_packages": dict(sorted(
            (dist.metadata["Name"], dist.version)
            for dist in metadata.distributions())),
    }
    json.dump(versions, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
