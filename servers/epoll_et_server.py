"""epoll-et: edge-triggered epoll(7); each connection is watched for reads and writes once, for good."""

from select import EPOLLET

from servers.base import READ, RECV_SIZE, WRITE, Peer
from servers.epoll_server import EpollServer


class EpollEdgeServer(EpollServer):
    def watch(self, peer: Peer) -> None:
        self.register(peer.fd, READ | WRITE | EPOLLET)

    def exchange(self, peer: Peer, events: int) -> None:
        # An edge is reported once: keep writing and reading until the socket would block. A read shorter
        # than its buffer has emptied the socket, and new bytes bring a new edge (epoll(7), as nginx reads):
        # it needs no second read to see EAGAIN.
        while peer.flush() and not peer.finished:
            if peer.receive() < RECV_SIZE:
                if peer.outbox or peer.http.paused:  # what the fast path could not write at once
                    peer.flush()
                return

    def rearm(self, peer: Peer) -> None:
        pass  # watched for both directions, for good
