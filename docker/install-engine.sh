#!/usr/bin/env bash
# Install and start what swissknife needs from Docker on a bare Debian host:
#   1. Docker Engine (Debian's docker.io) when dockerd is missing;
#   2. the Compose v2 CLI plugin when `docker compose` does not work;
#   3. a running dockerd when no daemon answers (no systemd on CI hosts);
#   4. /run/netns as a shared mount, so containers can bind it rslave.
# Idempotent and non-interactive: run it as root any number of times.
# Environment: DOCKERD_LOG (default /var/log/swissknife-dockerd.log),
#              DOCKERD_WAIT seconds to wait for the daemon (default 60).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=docker/lib.sh
. "$here/lib.sh"

export DEBIAN_FRONTEND=noninteractive
log=${DOCKERD_LOG:-/var/log/swissknife-dockerd.log}
wait_s=${DOCKERD_WAIT:-60}
# Both the Debian CLI (20.10) and newer upstream CLIs look for plugins here.
plugin_dir=/usr/libexec/docker/cli-plugins

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0): it installs packages and starts dockerd"

apt_updated=0
apt_update_once() {
    [ "$apt_updated" -eq 1 ] || { apt-get update -qq; apt_updated=1; }
}

# 1. Engine. Debian's docker.io brings dockerd, containerd and runc together.
if ! command -v dockerd >/dev/null 2>&1; then
    echo "install-engine: installing docker.io"
    apt_update_once
    apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null
fi

# 2. Compose v2 plugin. Bookworm has none; trixie's docker-compose package
# (a static-ish Go binary, depends only on libc6 >= 2.34) runs on bookworm.
# We fetch just that .deb (lib.sh: trixie_download), then copy the plugin
# binary out of it.
if ! docker compose version >/dev/null 2>&1; then
    echo "install-engine: installing the Compose v2 plugin from Debian trixie"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    trixie_download "$tmp/deb" docker-compose
    dpkg-deb -x "$tmp"/deb/docker-compose_*.deb "$tmp/x"
    src=$(find "$tmp/x" -type f -path '*/cli-plugins/docker-compose' | head -n1)
    [ -n "$src" ] || die "the trixie docker-compose package holds no cli-plugins/docker-compose binary"
    install -D -m 0755 "$src" "$plugin_dir/docker-compose"
    docker compose version >/dev/null 2>&1 \
        || die "installed $plugin_dir/docker-compose but '$(command -v docker) compose' still fails"
fi

# 3. Daemon. No systemd here: start dockerd detached, log to a file, and wait
# (bounded) for its socket and for `docker info` to answer.
if ! docker_answers; then
    if ! pgrep -x dockerd >/dev/null; then
        echo "install-engine: starting dockerd (log: $log)"
        mkdir -p "$(dirname "$log")"
        setsid dockerd >>"$log" 2>&1 </dev/null &
    fi
    for _ in $(seq "$wait_s"); do
        [ -S /var/run/docker.sock ] && docker_answers && break
        sleep 1
    done
    docker_answers || {
        tail -n 20 "$log" >&2 || true
        die "dockerd did not answer within ${wait_s}s; see $log (last lines above)"
    }
fi

# 4. /run/netns as a shared mount point, exactly as `ip netns add` and pyroute2
# leave it. Docker refuses the rslave/rshared /run/netns binds of compose.yaml
# ("not a shared or slave mount") on a host that has not made a namespace
# since boot, so do it here once; namespaces made later then propagate.
mkdir -p /run/netns
if [ "$(findmnt -n -o PROPAGATION --mountpoint /run/netns 2>/dev/null)" != shared ]; then
    mountpoint -q /run/netns || mount --bind /run/netns /run/netns
    mount --make-shared /run/netns
fi

echo "install-engine: $(docker version --format 'engine {{.Server.Version}}, client {{.Client.Version}}'), $(docker compose version --short 2>/dev/null | sed 's/^/compose /')"
