"""A test server that stops serving on a timer: python3 tests/stall_server.py PORT PERIOD_S STALL_S.

It answers every `GET` with a 13-byte body (pipelined requests too) and, for STALL_S at the start of every
PERIOD_S, neither reads nor writes: the clock starts at the first request, so a run sees the stalls in
phase with its own start. Prints "ready" once listening.
"""

import selectors
import socket
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!"


def main(port: int, period_s: float, stall_s: float) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytes] = {}
    epoch: float | None = None
    print("ready", flush=True)
    while True:
        if epoch is not None and stall_s and (into := (time.monotonic() - epoch) % period_s) < stall_s:
            time.sleep(stall_s - into)  # the stall: nothing read, nothing written
        for key, _ in selector.select(timeout=0.05):
            if key.fileobj is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(conn, selectors.EVENT_READ)
                buffers[conn] = b""
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                selector.unregister(conn)
                conn.close()
                del buffers[conn]
                continue
            if epoch is None:
                epoch = time.monotonic()
            *requests, buffers[conn] = (buffers[conn] + data).split(b"\r\n\r\n")
            conn.setblocking(True)  # answers are small: write them whole
            conn.sendall(RESPONSE * len(requests))
            conn.setblocking(False)


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]))
