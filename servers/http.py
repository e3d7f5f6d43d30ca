"""The HTTP/1.1 core every server model shares: parsing, routes, responses, limits.

A server model feeds the bytes it reads to one `HttpConnection` per client and
writes the `Response`s it gets back, in order:

    conn = HttpConnection()
    for response in conn.feed(data):   # data: any slice of the byte stream
        write response.head, then response.bulk bytes of BULK
    once they are written, while conn.paused: the same with conn.feed(b"")
    close once everything is written if conn.closing

Requests may arrive a byte at a time or many per read (pipelining); answers
come out in request order, in batches: a batch ends after MAX_BATCH answers,
after MAX_BATCH_BYTES of them, or after one from a slow handler (/sleep,
/cpu). The caller writes a batch before asking for the next, so one client's
pending output and queued work stay bounded, and a client that has gone is
noticed (its write fails) before more work is started for it.

HTTP/1.1 keeps the connection alive unless `Connection: close`; HTTP/1.0 keeps
it only with `Connection: keep-alive`. Request bodies with Content-Length are
read and discarded; one over MAX_BODY is refused with 413. Chunked request
bodies are refused with 411 Length Required: no route takes a body. Every
answer with a status of 400 or more closes the connection after it is sent.

Lines end with CRLF only. A bare LF, which RFC 9112 2.2 lets a recipient
accept, is answered with 400 Bad Request here, as soon as it could end a head:
one line-ending rule means a proxy in front can never disagree with this
server about where a request ends (request smuggling), and a client sending
LF-only requests gets a prompt answer instead of a connection that hangs.

`feed` never raises: a malformed request is answered with its 4xx status, any
other failure (a handler's bug, say) with 500, and the connection closes
either way; failures are logged to stderr at a bounded rate.

Handlers run in the thread that calls `feed`: `/sleep` and `/cpu` block it,
which is the point, since that is what each I/O model does with a slow handler.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, TextIO

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100
MAX_BODY = 1024 * 1024  # nginx's default client_max_body_size
MAX_BODY_DIGITS = len(str(MAX_BODY))  # a longer Content-Length is over MAX_BODY (int() of thousands of digits raises)
MAX_BATCH = 128  # answers per batch: above the benchmark's deepest pipeline (64)
MAX_BATCH_BYTES = 1024 * 1024
MAX_BYTES = 100 * 1024 * 1024
MAX_SLEEP_MS = 60_000
MAX_CPU_US = 10_000_000
# Route parameters are capped far below 10**18: a longer number is over every cap.
MAX_PARAMETER_DIGITS = 18
OVER_EVERY_CAP = 10**MAX_PARAMETER_DIGITS
FAILURE_LOG_BURST = 10  # tracebacks printed per window; the others are counted
FAILURE_LOG_WINDOW_S = 60.0

# /bytes/N bodies are slices of this one buffer, never a fresh N-byte object.
BULK_CHUNK = 256 * 1024
BULK = memoryview(b"x" * BULK_CHUNK)

SUPPORTED_METHODS = frozenset({b"GET", b"HEAD", b"POST"})
TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
VERSION = re.compile(rb"HTTP/[0-9](\.[0-9])?")
# A whole request the fast path takes without the field parser: method, target, version and up to
# MAX_HEADER_FIELDS fields, CRLF only, none of the fields that change how it is answered.
SIMPLE_REQUEST = re.compile(
    rb"(GET|HEAD|POST) (/[^ ?\r\n]*)(?:\?[^ \r\n]*)? HTTP/1\.([01])"
    rb"(?:\r\n(?!(?i:connection|content-length|transfer-encoding):)" + TOKEN.pattern + rb":[^\r\n]*)"
    rb"{0,%d}\r\n\r\n" % MAX_HEADER_FIELDS
)
REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    411: b"Length Required",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
    505: b"HTTP Version Not Supported",
}
KEEP_ALIVE_1_1 = b""
KEEP_ALIVE_1_0 = b"Connection: keep-alive\r\n"
CLOSE = b"Connection: close\r\n"


class Request(NamedTuple):
    """One parsed request; immutable, since a repeated request shares its parse (a NamedTuple: half the cost
    of a frozen dataclass to build)."""

    method: bytes
    path: bytes  # the target without its query
    keep_alive: bool
    connection_header: bytes  # the Connection line the answer must carry


@dataclass(eq=False, slots=True)
class Reply:
    """What a handler answers; the core turns it into wire bytes."""

    status: int
    body: bytes = b""
    bulk: int = 0  # bytes of BULK that follow the body
    prebuilt: bool = False  # constant: render once per Date second, not per request
    slow: bool = False  # the handler blocked or burnt CPU: its answer ends the batch


@dataclass(slots=True)
class Response:
    """Wire bytes of one answer: `head` (status, headers, small body), then `bulk` bytes of BULK."""

    head: bytes
    bulk: int = 0
    close_after: bool = False


class HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class FailureLog:
    """Tracebacks of unexpected failures, at most FAILURE_LOG_BURST per FAILURE_LOG_WINDOW_S; the rest are counted.

    A client that can make the server fail can make it fail in a loop: stderr must not grow with it.
    Shared by threads.
    """

    def __init__(self, stream: TextIO | None = None, burst: int = FAILURE_LOG_BURST,
                 window_s: float = FAILURE_LOG_WINDOW_S) -> None:
        self._stream = stream  # None: sys.stderr at the time of the report
        self._burst = burst
        self._window_s = window_s
        self._lock = threading.Lock()
        self._window_start = -window_s
        self._printed = 0
        self._suppressed = 0

    def report(self, what: str, error: BaseException) -> None:
        """Log `error` and what it did (a sentence: "..., so its connection was closed")."""
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= self._window_s:
                self._window_start, self._printed = now, 0
            if self._printed >= self._burst:
                self._suppressed += 1
                return
            self._printed += 1
            suppressed, self._suppressed = self._suppressed, 0
        note = f" ({suppressed} more failures were not shown)" if suppressed else ""
        print(f"servers: {what}{note}\n{''.join(traceback.format_exception(error))}",
              end="", file=self._stream or sys.stderr, flush=True)


FAILURES = FailureLog()


HELLO = Reply(200, b"Hello, World!", prebuilt=True)
NOT_FOUND = Reply(404, b"Not Found\n", prebuilt=True)
ERRORS = {status: Reply(status, reason + b"\n", prebuilt=True) for status, reason in REASONS.items() if status >= 400}


def render(reply: Reply, date: bytes, connection_header: bytes, head_only: bool) -> bytes:
    head = (
        b"HTTP/1.1 %d %s\r\nServer: swissknife\r\nDate: %s\r\n"
        b"Content-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n"
        % (reply.status, REASONS[reply.status], date, len(reply.body) + reply.bulk, connection_header)
    )
    return head if head_only else head + reply.body


class DateCache(threading.local):
    """The Date header, formatted at most once a second, with the prebuilt replies rendered for it.

    One per thread (a threading.local): threads never share its dictionary, which on free-threaded CPython
    would be a lock every request takes.
    """

    def __init__(self) -> None:
        self._second = -1
        self._date = b""
        self._prebuilt: dict[tuple[Reply, bytes, bool], bytes] = {}

    def render(self, reply: Reply, connection_header: bytes, head_only: bool) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second)).encode()
            self._second, self._prebuilt = second, {}
        if not reply.prebuilt:
            return render(reply, self._date, connection_header, head_only)
        key = (reply, connection_header, head_only)
        wire = self._prebuilt.get(key)
        if wire is None:
            wire = self._prebuilt[key] = render(reply, self._date, connection_header, head_only)
        return wire


DATES = DateCache()


def error_response(status: int) -> Response:
    """The answer that refuses a request (or a connection) with `status`, then closes."""
    return Response(DATES.render(ERRORS[status], CLOSE, False), close_after=True)


def send_bytes(count: int) -> Reply:
    if count > MAX_BYTES:
        return Reply(400, b"N is at most %d\n" % MAX_BYTES)
    return Reply(200, bulk=count)


def sleep(milliseconds: int) -> Reply:
    if milliseconds > MAX_SLEEP_MS:
        return Reply(400, b"MS is at most %d\n" % MAX_SLEEP_MS)
    time.sleep(milliseconds / 1000)
    return Reply(200, b"slept %d ms\n" % milliseconds, slow=True)


def burn_cpu(microseconds: int) -> Reply:
    if microseconds > MAX_CPU_US:
        return Reply(400, b"US is at most %d\n" % MAX_CPU_US)
    # Spin on the cheap wall clock, then check this thread's CPU clock (a
    # system call): time spent preempted must not count as burnt.
    cpu_deadline = time.thread_time() + microseconds / 1_000_000
    while (cpu_left := cpu_deadline - time.thread_time()) > 0:
        wall_deadline = time.perf_counter() + cpu_left
        while time.perf_counter() < wall_deadline:
            pass
    return Reply(200, b"burnt %d us\n" % microseconds, slow=True)


PARAMETER_ROUTES: dict[bytes, Callable[[int], Reply]] = {b"bytes": send_bytes, b"sleep": sleep, b"cpu": burn_cpu}


def route(request: Request) -> Reply:
    """The application: `/`, `/bytes/N`, `/sleep/MS`, `/cpu/US`, else 404."""
    if request.path == b"/":
        return HELLO
    name, _, argument = request.path[1:].partition(b"/")
    handler = PARAMETER_ROUTES.get(name)
    if handler is None or not argument.isdigit():
        return NOT_FOUND
    return handler(int(argument) if len(argument) <= MAX_PARAMETER_DIGITS else OVER_EVERY_CAP)


class HttpConnection:
    """The HTTP state of one client connection, fed the bytes read from it."""

    def __init__(self, app: Callable[[Request], Reply] = route) -> None:
        self._app = app
        self._buffer = bytearray()
        self._scanned = 0  # buffer bytes already searched for the end of the head
        self._waiting: Request | None = None  # parsed, its body still arriving
        self._body_left = 0
        self._repeated: bytes | None = None  # the last request the fast path took, and its parse
        self._repeated_request: Request | None = None
        self.requests = 0  # heads parsed so far: progress, for the timeouts
        self.paused = False  # a batch ended with requests still buffered: feed(b"") once it is written
        self.closing = False  # an answer that closes the connection was produced

    @property
    def pending(self) -> bool:
        """Whether request bytes are buffered unanswered: a head or body under way, or requests held back."""
        return self._waiting is not None or bool(self._buffer)

    def feed(self, data: bytes) -> list[Response]:
        """Take the next bytes of the stream; return the next batch of answers (see the module's docstring)."""
        if self.closing:
            return []
        if not self._buffer and (response := self.answer(data)) is not None:
            return [response]
        self._buffer += data
        self.paused = False
        responses: list[Response] = []
        size = 0
        try:
            while not self.closing:
                if self._waiting is None:
                    self._waiting = self._parse_head()
                    if self._waiting is None:
                        break
                    self.requests += 1
                if not self._skip_body():
                    break
                request, self._waiting = self._waiting, None
                reply = self._app(request)
                responses.append(response := self._respond(request, reply))
                size += len(response.head) + response.bulk
                if reply.slow or size >= MAX_BATCH_BYTES or len(responses) >= MAX_BATCH:
                    self.paused = not self.closing and bool(self._buffer)
                    break
        except Exception as error:
            responses.append(self._fail(error))
        return responses

    def answer(self, data: bytes) -> Response | None:
        """The fast path: the answer to `data` when it is the whole of one request without a body, nothing
        buffered before it; None when it is anything else, `data` not taken: feed(data) then.

        One request per read is what a kept-alive client sends; it skips the buffer, the batch and the
        search for further requests, and a request that repeats the last one taken here byte for byte
        reuses its parse (a parse is a function of the bytes alone). Every refusal is left to feed, which
        finds it again.
        """
        if self._buffer or self.closing or self._waiting is not None or len(data) > MAX_REQUEST_LINE + 4:
            return None
        data = bytes(data)  # a memoryview's copy (io-uring's); bytes as they are
        if data == self._repeated:
            request = self._repeated_request
        elif (request := self._parse_whole(data)) is None:
            return None
        else:
            # Kept as a copy: `data` may be a large read buffer shrunk in place (asyncio reads 256 KiB), and
            # holding such a buffer keeps glibc allocating every read with mmap.
            self._repeated, self._repeated_request = bytes(memoryview(data)), request
        self.requests += 1
        try:
            return self._respond(request, self._app(request))
        except Exception as error:
            return self._fail(error)

    def _parse_whole(self, data: bytes) -> Request | None:
        """`data` parsed as one whole request without a body; None if it is not one, or is refused."""
        if (simple := SIMPLE_REQUEST.fullmatch(data)) is not None:
            method, path, minor = simple.groups()
            keep_alive = minor == b"1"
            return Request(method, path, keep_alive, KEEP_ALIVE_1_1 if keep_alive else CLOSE)
        # Fields that take parsing (Connection, Content-Length, Transfer-Encoding), or a refusal.
        end = len(data) - 4
        if data.find(b"\r\n\r\n") != end or data.startswith(b"\r\n"):
            return None
        lines = data[:end].split(b"\r\n")
        if data.count(b"\n") - 2 >= len(lines):  # an LF that is not part of a CRLF
            return None
        try:
            request = self._parse_fields(lines)
        except HttpError:
            return None
        if self._body_left:  # its body is still to come
            self._body_left = 0
            return None
        return request

    def _fail(self, error: Exception) -> Response:
        """The answer to a request that failed (4xx for a malformed one, else 500), which closes the connection."""
        if isinstance(error, HttpError):
            return self._refuse(error.status)
        FAILURES.report("a request failed, so its connection was answered 500 and closed", error)
        return self._refuse(500)

    def _refuse(self, status: int) -> Response:
        self.closing = True
        self.paused = False
        return error_response(status)

    def _skip_body(self) -> bool:
        """Discard body bytes; True once the whole body is consumed."""
        taken = min(self._body_left, len(self._buffer))
        del self._buffer[:taken]
        self._body_left -= taken
        return self._body_left == 0

    def _parse_head(self) -> Request | None:
        buffer = self._buffer
        while buffer.startswith(b"\r\n"):  # empty lines before a request are allowed (RFC 9112 2.2)
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n", self._scanned)
        line_end = buffer.find(b"\r\n", 0, MAX_REQUEST_LINE + 2)
        if line_end < 0 and (end >= 0 or len(buffer) > MAX_REQUEST_LINE):
            raise HttpError(414)
        header_bytes = (end if end >= 0 else len(buffer)) - line_end
        if header_bytes > MAX_HEADER_BYTES:
            raise HttpError(431)
        if end < 0:
            # No CRLF CRLF yet (none can start before _scanned). An empty line ended by a bare LF would end
            # the head if LF ended lines: refuse it now, or such a client waits for an answer forever.
            if buffer.find(b"\n\n", self._scanned) >= 0 or buffer.find(b"\n\r\n", self._scanned) >= 0:
                raise HttpError(400)
            self._scanned = max(0, len(buffer) - 3)
            return None
        head = bytes(buffer[:end])
        del buffer[: end + 4]
        self._scanned = 0
        lines = head.split(b"\r\n")
        if head.count(b"\n") >= len(lines):  # an LF that is not part of a CRLF
            raise HttpError(400)
        return self._parse_fields(lines)

    def _parse_fields(self, lines: list[bytes]) -> Request:
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise HttpError(400)
        method, target, version = parts
        if version != b"HTTP/1.1" and version != b"HTTP/1.0":
            raise HttpError(505 if VERSION.fullmatch(version) else 400)
        if method not in SUPPORTED_METHODS:
            raise HttpError(501 if TOKEN.fullmatch(method) else 400)
        if not target.startswith(b"/"):
            raise HttpError(400)
        if len(lines) - 1 > MAX_HEADER_FIELDS:
            raise HttpError(431)
        keep_alive = version == b"HTTP/1.1"
        close_asked = False  # a close option wins over any keep-alive, in whichever field (RFC 9112 9.6)
        content_length = None
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not TOKEN.fullmatch(name):
                raise HttpError(400)
            name = name.lower()
            value = value.strip(b" \t")
            if name == b"connection":
                options = {option.strip().lower() for option in value.split(b",")}
                if b"close" in options:
                    close_asked = True
                elif b"keep-alive" in options:
                    keep_alive = True
            elif name == b"content-length":
                if not value.isdigit():
                    raise HttpError(400)
                if len(value) > MAX_BODY_DIGITS or (length := int(value)) > MAX_BODY:
                    raise HttpError(413)
                if content_length not in (None, length):
                    raise HttpError(400)
                content_length = length
            elif name == b"transfer-encoding":
                raise HttpError(411)
        self._body_left = content_length or 0
        keep_alive = keep_alive and not close_asked
        if not keep_alive:
            connection_header = CLOSE
        else:
            connection_header = KEEP_ALIVE_1_1 if version == b"HTTP/1.1" else KEEP_ALIVE_1_0
        return Request(method, target.partition(b"?")[0], keep_alive, connection_header)

    def _respond(self, request: Request, reply: Reply) -> Response:
        close = not request.keep_alive or reply.status >= 400
        self.closing = close
        connection_header = CLOSE if close else request.connection_header
        head_only = request.method == b"HEAD"
        head = DATES.render(reply, connection_header, head_only)
        return Response(head, 0 if head_only else reply.bulk, close)
