"""tornado's HTTPServer with one catch-all handler: python3 -m servers.peers.tornado_app HOST PORT IDLE_TIMEOUT_S"""

from __future__ import annotations

import asyncio
import signal
import sys

from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

from servers.peers.work import CONTENT_TYPE, answer


class Handler(RequestHandler):
    def get(self) -> None:
        status, body = answer(self.request.path)  # /sleep blocks the loop, as it blocks our event loops
        self.set_status(status)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(body)


async def serve(host: str, port: int, idle_timeout_s: float) -> None:
    server = HTTPServer(Application([(r"/.*", Handler)]), idle_connection_timeout=idle_timeout_s)
    server.listen(port, address=host, backlog=4096)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    host, port, idle = sys.argv[1:]
    asyncio.run(serve(host, int(port), float(idle)))
