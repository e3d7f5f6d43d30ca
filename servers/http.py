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

Framing is strict (RFC 9112), and a request is refused as soon as the bytes
received so far cannot begin a valid one, not when its head ends or times
out: the start line byte by byte (a method token, one SP, a target of visible
ASCII starting with /, one SP, `HTTP/` DIGIT `.` DIGIT, CRLF), each field line
once it is complete (a token, a colon, a value of HTAB, SP, visible ASCII and
obs-text only: RFC 9110 5.5; Content-Length once, digits only). Lines end with
CRLF only: a bare CR anywhere, or a bare LF (which RFC 9112 2.2 lets a
recipient accept), is answered 400. One line-ending rule means a proxy in front
can never disagree with this server about where a request ends (request
smuggling). Which problem is answered is that of the first byte past which no
valid request could begin, so how the bytes arrive never changes the answer.

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
SUPPORTED_VERSIONS = frozenset({b"HTTP/1.0", b"HTTP/1.1"})
TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
TOKEN = re.compile(TCHAR + rb"+")
TARGET_CHAR = rb"[!-~]"  # visible ASCII: no space, control, DEL or obs-text
FIELD_VALUE_CHAR = rb"[\t\x20-\x7e\x80-\xff]"  # RFC 9110 5.5: HTAB, SP, VCHAR, obs-text; no CR, LF, NUL, other controls
FIELD_LINE = re.compile(rb"(" + TCHAR + rb"+):(" + FIELD_VALUE_CHAR + rb"*)\r\n")
FRAMING_NAMES = frozenset({b"connection", b"content-length", b"transfer-encoding"})
# A whole request the fast path takes without the field parser: method, target, version and up to
# MAX_HEADER_FIELDS fields, CRLF only, none of the fields that change how it is answered. It takes exactly what
# the field parser (Head) would take with the same meaning, so which of the two parses a request never matters.
SIMPLE_REQUEST = re.compile(
    rb"(GET|HEAD|POST) (/[!->@-~]*)(?:\?" + TARGET_CHAR + rb"*)? HTTP/1\.([01])"
    rb"(?:\r\n(?!(?i:connection|content-length|transfer-encoding):)" + TOKEN.pattern + b":" + FIELD_VALUE_CHAR
    + rb"*){0,%d}\r\n\r\n" % MAX_HEADER_FIELDS
)
# A whole head, start line to empty line, that needs only its framing fields read (FRAMING_FIELD): most that the
# fast path does not take.
WELL_FORMED_HEAD = re.compile(
    rb"(GET|HEAD|POST) (/" + TARGET_CHAR + rb"*) HTTP/1\.([01])\r\n"
    rb"(?:" + TCHAR + rb"+:" + FIELD_VALUE_CHAR + rb"*\r\n){0,%d}\r\n" % MAX_HEADER_FIELDS
)
FRAMING_FIELD = re.compile(rb"\n(?i:(connection|content-length|transfer-encoding)):(" + FIELD_VALUE_CHAR + rb"*)")
# Anything else is parsed line by line (Head.parse), the start line checked against every start of a valid one.


def prefix_pattern(*pieces: bytes) -> re.Pattern[bytes]:
    """A pattern matching the longest start of the pieces' concatenation that a string begins with: each piece is one
    byte or class, repeated or not, and the match may stop after any piece (or inside a repetition)."""
    pattern = b""
    for piece in reversed(pieces):
        pattern = piece + (b"(?:" + pattern + b")?" if pattern else b"")
    return re.compile(pattern)


START_LINE_PREFIX = prefix_pattern(TCHAR + b"+", b" ", b"/", TARGET_CHAR + b"*", b" ", b"H", b"T", b"T", b"P", b"/",
                                   b"[0-9]", rb"\.", b"[0-9]", b"\r", b"\n")

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


def start_line_refusal(line: bytes) -> int | None:
    """The status refusing a request whose start line begins with `line` (up to its LF at most); None while it can
    still begin a valid one.

    Of its problems, the one whose byte came first decides, so more bytes never change a refusal: a byte the syntax
    does not allow there (400), the SP after a method not implemented here (501), the last digit of a version
    other than 1.0 and 1.1 (505), a byte of the line past MAX_REQUEST_LINE (414).
    """
    valid = (match := START_LINE_PREFIX.match(line)) and match.end() or 0
    problems = [(valid, 400)] if valid < len(line) else []
    if valid > MAX_REQUEST_LINE and line[MAX_REQUEST_LINE] != ord("\r"):
        problems.append((MAX_REQUEST_LINE, 414))
    method_end = line.find(b" ", 0, valid)
    if method_end >= 0:
        if line[:method_end] not in SUPPORTED_METHODS:
            problems.append((method_end, 501))
        version = line.find(b" ", method_end + 1, valid) + 1
        if version and version + 8 <= valid and line[version:version + 8] not in SUPPORTED_VERSIONS:
            problems.append((version + 7, 505))
    return min(problems)[1] if problems else None


def simple_request(match: re.Match[bytes]) -> Request:
    """The request SIMPLE_REQUEST matched."""
    method, path, minor = match.groups()
    keep_alive = minor == b"1"
    return Request(method, path, keep_alive, KEEP_ALIVE_1_1 if keep_alive else CLOSE)


class Head:
    """One request head, parsed a whole line at a time as its bytes arrive (each line once), the buffer holding it
    from its first byte: HttpError as soon as the bytes so far cannot begin a valid request (see the module)."""

    __slots__ = ("close_asked", "content_length", "end", "fields", "fields_at", "http_1_1", "keep_alive", "method",
                 "target")

    def __init__(self) -> None:
        self.end = 0  # bytes parsed: whole lines
        self.fields_at = 0  # where the field lines begin
        self.method = b""  # empty until the start line is parsed
        self.target = b""
        self.http_1_1 = False
        self.keep_alive = False
        self.close_asked = False  # a close option wins over any keep-alive, in whichever field (RFC 9112 9.6)
        self.content_length: int | None = None
        self.fields = 0

    def whole(self, buffer: bytes | bytearray, size: int) -> Request | None:
        """The request of the head `buffer[:size]` when it is well-formed as a whole (one expression, then its
        framing fields): the same as parse gives, for less; None when it is not (parse decides then)."""
        head = WELL_FORMED_HEAD.fullmatch(buffer, 0, size)
        if head is None or (fields_at := head.end(3) + 2) > MAX_REQUEST_LINE + 2 \
                or size - 1 >= fields_at + MAX_HEADER_BYTES:
            return None
        self.method, self.target, minor = head.groups()
        self.fields_at = fields_at
        self.http_1_1 = self.keep_alive = minor == b"1"
        for field in FRAMING_FIELD.finditer(buffer, fields_at - 1, size):
            self._framing(field[1].lower(), field[2])
        self.end = size
        return self._request()

    def parse(self, buffer: bytes | bytearray) -> Request | None:
        """Parse the lines not parsed yet; the request once the empty line that ends the head came (`end` is then
        the head's length), None while more bytes are needed."""
        while (lf := buffer.find(b"\n", self.end)) >= 0:
            at, self.end = self.end, lf + 1
            if not self.method:
                self._start_line(bytes(buffer[:min(self.end, MAX_REQUEST_LINE + 2)]))
            elif lf >= self.fields_at + MAX_HEADER_BYTES:
                raise HttpError(431)
            elif lf == at + 1 and buffer[at] == ord("\r"):
                return self._request()
            else:
                self._field(buffer, at)
        if not self.method:  # the start line, so far
            if (status := start_line_refusal(bytes(buffer[:MAX_REQUEST_LINE + 2]))) is not None:
                raise HttpError(status)
        elif len(buffer) > self.fields_at + MAX_HEADER_BYTES:
            raise HttpError(431)
        return None

    def _start_line(self, line: bytes) -> None:
        if (status := start_line_refusal(line)) is not None:
            raise HttpError(status)
        self.method, self.target, version = line[:-2].split(b" ")
        self.http_1_1 = self.keep_alive = version == b"HTTP/1.1"
        self.fields_at = len(line)

    def _field(self, buffer: bytes | bytearray, at: int) -> None:
        field = FIELD_LINE.fullmatch(buffer, at, self.end)
        if field is None:
            raise HttpError(400)
        self.fields += 1
        if self.fields > MAX_HEADER_FIELDS:
            raise HttpError(431)
        if (name := field[1].lower()) in FRAMING_NAMES:
            self._framing(name, field[2])

    def _framing(self, name: bytes, value: bytes) -> None:
        """Take a field that changes how the request is framed or answered (`name` in lower case)."""
        if name == b"connection":
            options = {option.strip(b" \t").lower() for option in value.split(b",")}
            if b"close" in options:
                self.close_asked = True
            elif b"keep-alive" in options:
                self.keep_alive = True
        elif name == b"content-length":
            value = value.strip(b" \t")
            if self.content_length is not None or not value.isdigit():  # a second one, even equal, is refused
                raise HttpError(400)
            if len(value) > MAX_BODY_DIGITS or (length := int(value)) > MAX_BODY:
                raise HttpError(413)
            self.content_length = length
        else:  # transfer-encoding
            raise HttpError(411)

    def _request(self) -> Request:
        keep_alive = self.keep_alive and not self.close_asked
        if not keep_alive:
            connection_header = CLOSE
        else:
            connection_header = KEEP_ALIVE_1_1 if self.http_1_1 else KEEP_ALIVE_1_0
        return Request(self.method, self.target.partition(b"?")[0], keep_alive, connection_header)


class HttpConnection:
    """The HTTP state of one client connection, fed the bytes read from it."""

    def __init__(self, app: Callable[[Request], Reply] = route) -> None:
        self._app = app
        self._buffer = bytearray()
        self._head = Head()  # the head being received
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
            return simple_request(simple)
        # Fields that take parsing (Connection, Content-Length, Transfer-Encoding), or a refusal.
        head = Head()
        try:
            request = head.whole(data, len(data))
        except HttpError:
            return None
        return None if head.content_length else request

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
        head = self._head
        if not head.end:  # nothing of this head parsed yet
            while buffer.startswith(b"\r\n"):  # empty lines before a request are allowed (RFC 9112 2.2)
                del buffer[:2]
            if buffer == b"\r":  # the start of another
                return None
            # A head that came whole (most of a pipeline) is taken by the fast path's expression or at once; one
            # that came in pieces, or is refused, line by line.
            end = buffer.find(b"\r\n\r\n", 0, MAX_REQUEST_LINE + MAX_HEADER_BYTES + 2)
            if 0 <= end <= MAX_REQUEST_LINE and (simple := SIMPLE_REQUEST.fullmatch(buffer, 0, end + 4)) is not None:
                request = simple_request(simple)  # before the buffer moves: a match reads its groups from it
                del buffer[: end + 4]
                return request
            if end >= 0 and (request := head.whole(buffer, end + 4)) is not None:
                return self._take_head(request)
        if (request := head.parse(buffer)) is not None:
            return self._take_head(request)
        return None

    def _take_head(self, request: Request) -> Request:
        del self._buffer[: self._head.end]
        self._body_left = self._head.content_length or 0
        self._head = Head()
        return request

    def _respond(self, request: Request, reply: Reply) -> Response:
        close = not request.keep_alive or reply.status >= 400
        self.closing = close
        connection_header = CLOSE if close else request.connection_header
        head_only = request.method == b"HEAD"
        head = DATES.render(reply, connection_header, head_only)
        return Response(head, 0 if head_only else reply.bulk, close)
