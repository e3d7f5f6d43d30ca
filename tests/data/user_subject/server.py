"""A user's own server, written for the tests (not one of ours): the standard library's http.server,
threaded, HTTP/1.1 keep-alive, serving / and /bytes/N. `WRONG=1` answers /bytes/N one byte short.

    python3 server.py HOST PORT
"""

from __future__ import annotations

import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        if self.path == "/":
            body = b"Hello, World!"
        elif self.path.startswith("/bytes/") and self.path[7:].isdigit():
            body = b"y" * (int(self.path[7:]) - (1 if os.environ.get("WRONG") else 0))
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:  # no line per request
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    Server((host, port), Handler).serve_forever()
