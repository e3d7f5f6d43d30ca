"""aiohttp's own server with one catch-all handler: python3 -m servers.peers.aiohttp_app HOST PORT IDLE_TIMEOUT_S"""

from __future__ import annotations

import sys

from aiohttp import web

from servers.peers.work import CONTENT_TYPE, answer


async def handle(request: web.Request) -> web.Response:
    status, body = answer(request.path)  # /sleep blocks the loop, as it blocks our event loops
    return web.Response(status=status, body=body, content_type=CONTENT_TYPE)


def main(host: str, port: str, idle_timeout_s: str) -> None:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    web.run_app(app, host=host, port=int(port), access_log=None, print=None, backlog=4096,
                keepalive_timeout=float(idle_timeout_s), handle_signals=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
