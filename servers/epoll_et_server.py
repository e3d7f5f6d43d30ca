"""epoll-et: edge-triggered epoll(7); each connection is watched for reads and writes once, for good."""

from select import EPOLLET

from servers.base import READ, WRITE, Peer
from servers.epoll_server import EpollServer


class EpollEdgeServer(EpollServer):
    def watch(self, peer: Peer) -> None:
        self.register(peer.fd, READ | WRITE | EPOLLET)

    def exchange(self, peer: Peer, events: int) -> None:
        # An edge is reported once: keep writing and reading until the socket would block.
        while peer.flush() and not peer.finished and peer.receive():
            pass

    def rearm(self, peer: Peer) -> None:
        pass  # watched for both directions, for good
