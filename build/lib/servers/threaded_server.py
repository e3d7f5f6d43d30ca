"""threaded: one thread per connection, each on a blocking socket."""

import threading

from servers.base import Peer, Server, block_shutdown_signals


class ThreadedServer(Server):
    blocking_sockets = True

    def serve(self) -> None:
        while True:
            if peer := self.accept():
                threading.Thread(target=self._converse_in_thread, args=(peer,), daemon=True).start()

    def _converse_in_thread(self, peer: Peer) -> None:
        block_shutdown_signals()
        self.converse(peer)
