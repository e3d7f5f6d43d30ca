"""python3 -m bench.profiling support PYTHON | problem | syscalls S | profile S OUT NAME SUPPORT_JSON

The library run beside the server, for the docker runner: it execs this inside
the server's container, where perf sees the server's processes and the
interpreter's perf maps live in /tmp. The server is the container's PID 1 and
its descendants (reuseport workers): not the execs beside it, this one included.
The answer is one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from bench.procfs import process_tree
from bench.profiling import PythonSupport, count_syscalls, perf_problem, profile_server, python_perf_args


def server_pids() -> list[int]:
    return [stat.pid for stat in process_tree(1)]


def answer(command: str, *args: str) -> dict:
    if command == "support":
        return asdict(python_perf_args(args[0]))
    if command == "problem":
        return {"problem": perf_problem()}
    if command == "syscalls":
        return asdict(count_syscalls(server_pids(), float(args[0])))
    duration, out_dir, name, support = args
    fields = json.loads(support)
    python = PythonSupport(tuple(fields["args"]), fields["method"], fields["reason"])
    return asdict(profile_server(server_pids(), float(duration), Path(out_dir), name, python))


if __name__ == "__main__":
    print(json.dumps(answer(*sys.argv[1:]), default=str))  # default: the result's paths
