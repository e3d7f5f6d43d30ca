"""nginx (the Debian package) as the C reference server: one worker (more when the idle connections
need them), the same routes.

    python3 -m bench.nginx DIRECTORY HOST PORT [WORKERS]

writes its files into DIRECTORY and execs nginx, in the process (or container) that will be the
server: the open-file limit it sizes nginx by is the server's own, and no files are copied in.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

from bench.config import WORKLOADS, host_port

CONFIG = """\
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{
    worker_connections {connections};
}}
http {{
    access_log off;
    # Idle connections that never send a request stay open, as with the Python servers
    # (nginx's default would close them after 60 s); the listen backlog is theirs too (nginx's: 511).
    client_header_timeout 1h;
    server {{
        listen {address} backlog=4096{reuseport};
        location = / {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
        location /bytes/ {{
            types {{ }}
            default_type application/octet-stream;
            root {directory}/www;
        }}
    }}
}}
"""


def prepare(directory: Path, host: str, port: int, nofile: int, workers: int = 1) -> list[str]:
    """Write the config and the /bytes/N files into `directory`; return nginx's command line.

    Several workers get a listener each (reuseport): the kernel spreads the connections over them, where
    a shared listener lets one worker take connections past its worker_connections and drop them.
    """
    directory.chmod(0o755)  # the worker runs as nobody and must read www/
    bytes_dir = directory / "www" / "bytes"
    bytes_dir.mkdir(parents=True)
    for size in {w.body_size for w in WORKLOADS.values() if w.body_size is not None}:
        (bytes_dir / str(size)).write_bytes(b"x" * size)
    config = directory / "nginx.conf"
    # Leave some descriptors for the listening socket, logs and files.
    config.write_text(CONFIG.format(directory=directory, address=host_port(host, port), workers=workers,
                                    reuseport=" reuseport" if workers > 1 else "",
                                    nofile=nofile, connections=max(nofile - 100, 1024)))
    return ["nginx", "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(config)]


def main(directory: str, host: str, port: str, workers: str = "1") -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    command = prepare(Path(directory), host, int(port), resource.getrlimit(resource.RLIMIT_NOFILE)[0], int(workers))
    os.execvp(command[0], command)  # nginx becomes this process: the pid the runner holds


if __name__ == "__main__":
    main(*sys.argv[1:])
