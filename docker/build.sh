#!/usr/bin/env bash
# Build everything swissknife runs in, on any host with a Docker daemon:
#   1. the base image debian:trixie-slim: kept if present, else pulled, else
#      built locally (docker/build-base.sh) when no registry is reachable;
#   2. swissknife:latest from docker/Dockerfile through compose (BuildKit),
#      handing in the host's CA bundle as a build secret when there is one;
#   3. with --free-threaded, also swissknife-ft:latest (docker/Dockerfile.ft:
#      swissknife:latest plus CPython built with and without the GIL; minutes
#      cold, seconds once its stages are cached: no results file times it).
# Prints how long each step took. Usage: sudo docker/build.sh [--no-cache] [--free-threaded]
# Environment: SWISSKNIFE_CA_BUNDLE  CA bundle for the pip step
#              (default /etc/ssl/certs/ca-certificates.crt if it exists).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# shellcheck source=docker/lib.sh
. "$here/lib.sh"

build_opts=()
free_threaded=false
for arg in "$@"; do
    case "$arg" in
        --no-cache) build_opts+=(--no-cache) ;;
        --free-threaded) free_threaded=true ;;
        *) die "usage: $0 [--no-cache] [--free-threaded]" ;;
    esac
done

docker_answers || die "no Docker daemon answers; run: sudo docker/install-engine.sh"
docker compose version >/dev/null 2>&1 \
    || die "the Compose v2 plugin is missing; run: sudo docker/install-engine.sh"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
total=$(now)

# 1. Base image.
t=$(now)
base=debian:trixie-slim
if docker image inspect "$base" >/dev/null 2>&1; then
    echo "build: base $base present"
elif docker pull -q "$base" >/dev/null 2>&1; then
    echo "build: base $base pulled"
else
    echo "build: cannot pull $base (no registry?); building it with debootstrap"
    "$here/build-base.sh"
fi
echo "build: base ready in $(since "$t")"

# 2. The project image. The CA bundle goes in as a BuildKit secret (see the
# Dockerfile): it is used by pip during the build and is not in the image.
if [ -z "${SWISSKNIFE_CA_BUNDLE:-}" ]; then
    if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
        export SWISSKNIFE_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
    else
        export SWISSKNIFE_CA_BUNDLE=/dev/null  # nothing extra to trust
    fi
fi
[ -r "$SWISSKNIFE_CA_BUNDLE" ] || die "SWISSKNIFE_CA_BUNDLE=$SWISSKNIFE_CA_BUNDLE is not readable"
echo "build: swissknife:latest (CA bundle: $SWISSKNIFE_CA_BUNDLE)"
t=$(now)
# Build through one service: every service uses the same image tag.
docker compose --project-directory "$root" -f "$root/compose.yaml" \
    build "${build_opts[@]}" --progress plain bench >"$root/docker/build.log" 2>&1 || {
    tail -n 30 "$root/docker/build.log" >&2
    die "image build failed; full log: docker/build.log"
}
echo "build: image built in $(since "$t") (log: docker/build.log)"
docker image ls swissknife:latest

# 3. The free-threaded image, FROM the image just built.
if $free_threaded; then
    echo "build: swissknife-ft:latest (CPython with and without the GIL; minutes when not cached)"
    t=$(now)
    docker compose --project-directory "$root" -f "$root/compose.yaml" --profile free-threaded \
        build "${build_opts[@]}" --progress plain bench-ft >"$root/docker/build-ft.log" 2>&1 || {
        tail -n 30 "$root/docker/build-ft.log" >&2
        die "free-threaded image build failed; full log: docker/build-ft.log"
    }
    echo "build: free-threaded image built in $(since "$t") (log: docker/build-ft.log)"
    docker image ls swissknife-ft:latest
fi
echo "build: total $(since "$total")"
