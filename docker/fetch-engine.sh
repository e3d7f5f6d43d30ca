#!/usr/bin/env bash
# Debian trixie's Docker Engine (docker.io 26.1 and its containerd 1.7), unpacked into a private
# directory and never installed: the tests run it as a second engine beside the host's (20.10).
#   docker/fetch-engine.sh [DIR]     (default /var/cache/swissknife/engine26)
# Prints the directory to put first on the daemon's PATH (dockerd, containerd, the runc shim).
# Fetches once: a later call finds DIR complete and only prints. Exits 3, saying why, when this
# host cannot have it (no trixie in its mirror, or binaries that do not run here).
#
# trixie's runc 1.1.15 is not used: it needs glibc 2.38 (__isoc23_strtol) and bookworm has 2.36.
# The shim finds the host's runc on PATH (bookworm's 1.1.5, installed with docker.io); the
# default seccomp profile that blocks io_uring is dockerd's, whichever runc loads it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=docker/lib.sh
. "$here/lib.sh"

dir=${1:-/var/cache/swissknife/engine26}
bin=$dir/bin
[ "$(id -u)" -eq 0 ] || die "run as root: it writes $dir"
command -v runc >/dev/null || die "no runc on PATH: install the host's engine first (docker/install-engine.sh)"

if [ ! -f "$dir/versions" ]; then
    echo "fetch-engine: fetching docker.io and containerd from Debian trixie into $dir" >&2
    rm -rf "$dir.partial"
    trap 'rm -rf "$dir.partial"' EXIT  # whatever stops the fetch
    trixie_download "$dir.partial/deb" docker.io containerd
    for deb in "$dir.partial"/deb/*.deb; do dpkg-deb -x "$deb" "$dir.partial/root"; done
    mkdir -p "$dir.partial/bin"
    for tool in usr/sbin/dockerd usr/bin/containerd usr/bin/containerd-shim-runc-v2; do
        ln -s "../root/$tool" "$dir.partial/bin/"
    done
    if ! versions=$("$dir.partial/bin/dockerd" --version 2>&1 && "$dir.partial/bin/containerd" --version 2>&1); then
        echo "error: trixie's engine does not run on this host: $versions" >&2
        exit 3
    fi
    echo "$versions" >"$dir.partial/versions"
    rm -rf "$dir.partial/deb" "$dir"
    mv "$dir.partial" "$dir"  # complete or absent, never half there
fi
echo "$bin"
