"""What every peer answers: our handlers' work (servers/http.py), framework-free."""

from __future__ import annotations

from servers import http

CONTENT_TYPE = "text/plain"  # as our core answers every route
HELLO = http.HELLO.body
NOT_FOUND = (404, http.NOT_FOUND.body)
BULK = bytes(http.BULK)


def answer(path: str) -> tuple[int, bytes]:
    """(status, body) for a request's path: `/`, `/bytes/N`, `/sleep/MS` (blocking, as ours), `/cpu/US`."""
    if path == "/":
        return 200, HELLO
    name, _, argument = path[1:].partition("/")
    handler = http.PARAMETER_ROUTES.get(name.encode())
    if handler is None or not argument.isdigit():
        return NOT_FOUND
    reply = handler(int(argument) if len(argument) <= http.MAX_PARAMETER_DIGITS else http.OVER_EVERY_CAP)
    return reply.status, reply.body + bulk(reply.bulk) if reply.bulk else reply.body


def bulk(count: int) -> bytes:
    """`count` bytes of the bulk body (our core streams them; a framework wants them whole)."""
    if count <= len(BULK):
        return BULK[:count]
    whole, rest = divmod(count, len(BULK))
    return BULK * whole + BULK[:rest]
