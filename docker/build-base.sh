#!/usr/bin/env bash
# Build the debian:trixie-slim base image locally, for hosts that cannot pull
# from a registry (air-gapped, or behind a proxy with no registry access).
# The Dockerfile says `FROM debian:trixie-slim` either way; this script only
# makes that name exist. The rootfs comes from the Debian mirror this host's
# apt already uses (never a hard-coded host name).
#
# Usage: sudo docker/build-base.sh [--force]
#   --force   rebuild and re-tag even if debian:trixie-slim already exists.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=docker/lib.sh
. "$here/lib.sh"

image=debian:trixie-slim
suite=trixie
force=0
case "${1:-}" in
    "") ;;
    --force) force=1 ;;
    *) die "usage: $0 [--force]" ;;
esac

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0): debootstrap needs root"
docker_answers || die "no Docker daemon answers; run docker/install-engine.sh first"

if [ "$force" -eq 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "build-base: $image already exists (use --force to rebuild)"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "build-base: installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

mirror=$(debian_mirror)
# On disk, not in /tmp (may be a small tmpfs); removed whatever happens.
rootfs=$(mktemp -d /var/tmp/swissknife-rootfs.XXXXXX)
cleanup() {
    # debootstrap mounts proc/sys inside the target; a failed run can leave
    # them mounted, and rm must never descend into the host's /proc.
    findmnt -rn -o TARGET | grep "^$rootfs" | sort -r | xargs -r umount -l || true
    rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT

echo "build-base: debootstrap --variant=minbase $suite from $mirror"
start=$(date +%s)
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 20 "$rootfs.log" >&2
    die "debootstrap failed (full log: $rootfs.log); check that $mirror serves $suite"
}
rm -f "$rootfs.log"

# Same suites as the registry image: the release, its updates and, when the
# host has a security archive configured, trixie-security from it.
{
    echo "deb $mirror $suite main"
    echo "deb $mirror $suite-updates main"
    security=$(debian_security_mirror)
    [ -z "$security" ] || echo "deb $security $suite-security main"
} >"$rootfs/etc/apt/sources.list"

# Make it "slim" like the registry image: no docs, man pages or translations
# now or in later apt installs, and no apt caches left in layers.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
rm -rf "$rootfs"/usr/share/{man,info,locale}/* "$rootfs"/var/cache/apt/* \
       "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/*

tar --numeric-owner -C "$rootfs" -c . |
    docker import --change 'CMD ["bash"]' \
        --message "debootstrap --variant=minbase $suite (swissknife docker/build-base.sh)" \
        - "$image" >/dev/null
echo "build-base: built $image in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
