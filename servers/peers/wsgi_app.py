"""The WSGI app of the gunicorn peers: servers.peers.wsgi_app:app (under gevent, /sleep's time.sleep yields)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus

from servers.peers.work import CONTENT_TYPE, answer


def app(environ: dict, start_response: Callable[[str, list[tuple[str, str]]], object]) -> Iterable[bytes]:
    status, body = answer(environ["PATH_INFO"])
    start_response(f"{status} {HTTPStatus(status).phrase}",
                   [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
    return [body]
