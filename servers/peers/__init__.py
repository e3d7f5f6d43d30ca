"""Minimal apps for the production servers (peers, bench/subjects.py): each serves our four routes with
the same work as our models (servers/http.py's handlers), and nothing of its framework on the hot path.

    asgi_app    uvicorn, granian (ASGI)
    wsgi_app    gunicorn's sync, gthread and gevent workers (WSGI)
    aiohttp_app, tornado_app   their own servers: python3 -m servers.peers.NAME HOST PORT IDLE_TIMEOUT_S
"""
