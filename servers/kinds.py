"""Every server model by its command-line name, and the floor reference (not a model: `--list` leaves it out)."""

from servers.asyncio_server import AsyncioServer
from servers.base import ServerModel
from servers.blocking_server import BlockingServer
from servers.epoll_et_server import EpollEdgeServer
from servers.epoll_pool_server import EpollPoolServer
from servers.epoll_server import EpollServer
from servers.floor_server import FloorServer
from servers.io_uring_server import IoUringServer
from servers.poll_server import PollServer
from servers.reuseport_server import ReuseportServer
from servers.select_server import SelectServer
from servers.threaded_server import ThreadedServer

KINDS: dict[str, type[ServerModel]] = {
    "blocking": BlockingServer,
    "threaded": ThreadedServer,
    "select": SelectServer,
    "poll": PollServer,
    "epoll": EpollServer,
    "epoll-et": EpollEdgeServer,
    "epoll-pool": EpollPoolServer,
    "asyncio": AsyncioServer,
    "reuseport": ReuseportServer,
    "io-uring": IoUringServer,
}
REFERENCES: dict[str, type[ServerModel]] = {"floor": FloorServer}
RUNNABLE = KINDS | REFERENCES
