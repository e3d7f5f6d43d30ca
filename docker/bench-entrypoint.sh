#!/usr/bin/env bash
# Entrypoint of the compose `bench` service: turn the BENCH_* environment into
# `python3 -m bench` options, then exec it so its exit status (the sweep's) is
# the container's and `docker compose up bench` reports it unmasked.
#   BENCH_PROFILE      smoke|quick|plaintext|full (default quick: the lesson in under 5 minutes)
#   BENCH_SERVERS      servers or categories, e.g. "epoll poll", "epoll,poll" or "model peer"
#   BENCH_SUBJECTS     your own servers: TOML files, absolute or in BENCH_SUBJECTS_DIR, e.g. "mine.toml"
#   BENCH_CONNECTIONS  connection counts, e.g. "10 100" or "10,100"
#   BENCH_DURATION     seconds per wrk run
#   BENCH_REPEAT       repeats per point
#   BENCH_EXPERIMENTS  experiments, e.g. "idle-connections blocking-handler"
#   BENCH_WORKLOADS    workloads, e.g. "plaintext sleep-5"
#   BENCH_FLAMEGRAPHS  non-empty: one extra perf-profiled run per server and workload
#   BENCH_RUNNER       docker (default) | process: servers and wrk as processes in this container
#   BENCH_SERVER_ENGINE   Docker engine of the servers (URL or context), e.g. tcp://10.0.0.1:2375
#   BENCH_CLIENT_ENGINES  engines running wrk, e.g. "tcp://10.0.0.2:2375 tcp://10.0.0.3:2375"
#   BENCH_SERVER_ADDR     the server host's address the servers listen on and wrk loads
# Extra arguments (`docker compose run --rm bench --foo`) are passed through.
# `docker compose run --rm bench gil [options]` runs the gil experiment instead
# (python3 -m bench gil; it needs swissknife-ft:latest: docker/build.sh --free-threaded).
set -euo pipefail
set -f  # the values are words for argv, never glob patterns

if [ "${1:-}" = gil ]; then
    shift
    exec python3 -m bench gil --runner docker "$@"
fi

args=(--runner "${BENCH_RUNNER:-docker}" --profile "${BENCH_PROFILE:-quick}")
# Unquoted on purpose: "epoll poll" (or "epoll,poll") is two arguments.
# shellcheck disable=SC2206
[ -z "${BENCH_SERVERS:-}" ] || args+=(--servers ${BENCH_SERVERS//,/ })
# shellcheck disable=SC2206
[ -z "${BENCH_CONNECTIONS:-}" ] || args+=(--connections ${BENCH_CONNECTIONS//,/ })
[ -z "${BENCH_DURATION:-}" ] || args+=(--duration "$BENCH_DURATION")
[ -z "${BENCH_REPEAT:-}" ] || args+=(--repeat "$BENCH_REPEAT")
# shellcheck disable=SC2206
[ -z "${BENCH_EXPERIMENTS:-}" ] || args+=(--experiments ${BENCH_EXPERIMENTS//,/ })
# shellcheck disable=SC2206
[ -z "${BENCH_WORKLOADS:-}" ] || args+=(--workloads ${BENCH_WORKLOADS//,/ })
[ -z "${BENCH_FLAMEGRAPHS:-}" ] || args+=(--flamegraphs)
[ -z "${BENCH_SERVER_ENGINE:-}" ] || args+=(--server-engine "$BENCH_SERVER_ENGINE")
client_engines=${BENCH_CLIENT_ENGINES:-}
# shellcheck disable=SC2086
for engine in ${client_engines//,/ }; do
    args+=(--client-engine "$engine")
done
[ -z "${BENCH_SERVER_ADDR:-}" ] || args+=(--server-addr "$BENCH_SERVER_ADDR")
subject_files=${BENCH_SUBJECTS:-}
# shellcheck disable=SC2086
for file in ${subject_files//,/ }; do
    case "$file" in
        /*) args+=(--subject "$file") ;;
        *) args+=(--subject "${BENCH_SUBJECTS_DIR:?BENCH_SUBJECTS names a relative file: set BENCH_SUBJECTS_DIR}/$file") ;;
    esac
done

exec python3 -m bench "${args[@]}" "$@"
