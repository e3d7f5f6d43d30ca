"""blocking: one connection at a time on blocking sockets, the original report's basic server.

Keep-alive is supported, so one idle client holds the whole server: that is the model.
"""

from servers.base import Server


class BlockingServer(Server):
    blocking_sockets = True

    def serve(self) -> None:
        while True:
            if peer := self.accept():
                self.converse(peer)
