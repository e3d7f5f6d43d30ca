"""The ASGI app of the uvicorn and granian peers: servers.peers.asgi_app:app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from servers.peers.work import CONTENT_TYPE, answer

HEADERS = [(b"content-type", CONTENT_TYPE.encode())]


async def app(scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
    if scope["type"] == "lifespan":  # nothing to set up: acknowledge start and shutdown
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    status, body = answer(scope["path"])  # /sleep blocks the loop, as it blocks our event loops
    await send({"type": "http.response.start", "status": status,
                "headers": [*HEADERS, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
