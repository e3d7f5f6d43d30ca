"""python3 -m servers KIND --host ADDR -p PORT [--workers N] [--backlog N] [--uvloop]
                    [--header-timeout S] [--idle-timeout S] | --list"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys

from servers.base import (
    HEADER_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    SHUTDOWN_SIGNALS,
    UNSUPPORTED_EXIT,
    Settings,
    Unsupported,
    UsageError,
    raise_open_file_limit,
    run_until_shutdown,
)
from servers.kinds import KINDS, RUNNABLE

MAX_TIMEOUT_S = 24 * 3600.0

BIND_ERRORS = {
    errno.EADDRINUSE: "the port is already in use",
    errno.EADDRNOTAVAIL: "the address is not on this host",
    errno.EACCES: "permission denied",
}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m servers", description="Run one HTTP server model.")
    parser.add_argument("kind", nargs="?", help="the I/O model; --list names them")
    parser.add_argument("--list", action="store_true", help="print the kinds, one a line, and exit")
    parser.add_argument("--host", default="127.0.0.1", help="numeric IPv4 or IPv6 address (default 127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, default=8080, help="TCP port (default 8080; 0: any free port)")
    parser.add_argument("--backlog", type=int, default=4096, help="listen backlog (default 4096)")
    parser.add_argument("--workers", type=int, help="reuseport: processes (default: CPU count); "
                        "epoll-pool: threads (default 10); threaded: most threads, one per connection, "
                        "before new connections are answered 503 (default 16384)")
    parser.add_argument("--uvloop", action="store_true", help="asyncio: run on uvloop's event loop")
    parser.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT_S, metavar="S",
                        help=f"close a client that takes longer to send a request (default {HEADER_TIMEOUT_S:g} s)")
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S, metavar="S",
                        help="close a connection idle that long between requests, or not reading its answers "
                        f"(default {IDLE_TIMEOUT_S:g} s)")
    return parser.parse_args(argv)


def usage_problem(args: argparse.Namespace) -> str | None:
    if args.kind not in RUNNABLE:
        given = f"unknown kind {args.kind!r}" if args.kind else "no kind given"
        return f"{given}; kinds: {', '.join(RUNNABLE)}"
    if args.workers is not None and (not RUNNABLE[args.kind].takes_workers or args.workers < 1):
        takers = ", ".join(kind for kind, model in RUNNABLE.items() if model.takes_workers)
        return f"--workers takes a positive count, for {takers} only"
    if args.uvloop and args.kind != "asyncio":
        return "--uvloop applies to the asyncio kind only"
    if not 0 <= args.port <= 65535:
        return f"--port must be 0..65535, not {args.port}"
    if not all(0 < timeout <= MAX_TIMEOUT_S for timeout in (args.header_timeout, args.idle_timeout)):
        return f"--header-timeout and --idle-timeout take seconds, more than 0 and at most {MAX_TIMEOUT_S:g}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.list:
        print("\n".join(KINDS))
        return 0
    if problem := usage_problem(args):
        print(f"servers: {problem}", file=sys.stderr)
        return 2
    settings = Settings(args.host, args.port, args.backlog, args.workers, args.uvloop, args.header_timeout,
                        args.idle_timeout)
    # SIGTERM/SIGINT wait until the model serves (run_until_shutdown): the listener accepts connections
    # before the model is ready (importing uvloop can take a while), and a client may already ask it to
    # stop. Threads a model starts meanwhile inherit the mask, so the signal always reaches this thread.
    signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
    raise_open_file_limit()
    try:
        server = RUNNABLE[args.kind].create(settings)
    except UsageError as error:
        print(f"servers: {error}", file=sys.stderr)
        return 2
    except Unsupported as error:
        print(f"servers: {args.kind} cannot run here: {error}", file=sys.stderr)
        return UNSUPPORTED_EXIT
    except socket.gaierror:
        print(f"servers: --host must be a numeric IPv4 or IPv6 address, not {args.host!r}", file=sys.stderr)
        return 2
    except OSError as error:
        reason = BIND_ERRORS.get(error.errno, error.strerror)
        print(f"servers: cannot listen on {args.host} port {args.port}: {reason}", file=sys.stderr)
        return 1
    host = f"[{args.host}]" if ":" in args.host else args.host
    gil = "on" if getattr(sys, "_is_gil_enabled", lambda: True)() else "off"
    print(f"listening on {host}:{server.port} kind={args.kind} pid={os.getpid()} gil={gil}", flush=True)
    run_until_shutdown(server)
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Pool threads may still sleep in a /sleep handler: exit now, not after them.
    os._exit(status)
