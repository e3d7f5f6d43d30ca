"""The HTTP core fed random and mutated byte streams in random pieces: it never raises, and every answer is
well-formed."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servers.http import MAX_BATCH, MAX_BATCH_BYTES, MAX_BODY, REASONS, HttpConnection, Reply, Request, Response, route

STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ([^\r\n]+)")
FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ([^\r\n]*)")


def quick_route(request: Request) -> Reply:
    """The real routes, except that /sleep and /cpu answer at once: their duration is not under test here."""
    if request.path.startswith((b"/sleep/", b"/cpu/")) and request.path.split(b"/")[2].isdigit():
        return Reply(200, b"done\n", slow=True)
    return route(request)


# --- streams: valid requests, then mutated ---------------------------------------------------------------

FINE_PATHS = [b"/", b"/bytes/0", b"/bytes/5", b"/bytes/20000", b"/bytes/1?q=1", b"/sleep/1", b"/cpu/1"]
FINE_FIELDS = [b"Host: test", b"X-Any: value", b"Content-Length: 0", b"Connection: keep-alive"]
# Each of these makes the answer close the connection: a refusal, or no keep-alive.
CLOSING_PATHS = [b"/nowhere", b"/bytes/" + b"9" * 5000]
CLOSING_FIELDS = [b"Connection: close", b"Transfer-Encoding: chunked", b"Content-Length: " + b"1" * 5000,
                  b"Content-Length: %d" % (MAX_BODY + 1)]


@st.composite
def request_and_whether_it_closes(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A well-formed request, and whether the connection closes after its answer (an error, or no keep-alive)."""
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST"]))
    path = draw(st.sampled_from(FINE_PATHS + CLOSING_PATHS))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    headers = draw(st.lists(st.sampled_from(FINE_FIELDS + CLOSING_FIELDS), max_size=4, unique=True))
    body = b""
    if method == b"POST" and not any(field.startswith(b"Content-Length") for field in headers):
        body = draw(st.binary(max_size=40))
        headers.append(b"Content-Length: %d" % len(body))
    closes = (path in CLOSING_PATHS or any(field in CLOSING_FIELDS for field in headers)
              or version == b"HTTP/1.0" and b"Connection: keep-alive" not in headers)
    head = b"%s %s %s\r\n%s\r\n" % (method, path, version, b"".join(field + b"\r\n" for field in headers))
    return head + body, closes


valid_request = request_and_whether_it_closes().map(lambda pair: pair[0])


insertions = st.one_of(
    st.binary(min_size=1, max_size=8),
    st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n", b"\r\n\r\n", b" ", b":", b"\x00", b"9" * 5000,
                     b"Content-Length: " + b"7" * 4400 + b"\r\n", b"GET / HTTP/1.1\n\n"]),
)


@st.composite
def mutated(draw: st.DrawFn, stream: bytes) -> bytes:
    """`stream` with a few bytes flipped, inserted or deleted, or its CRLFs turned into bare LFs."""
    data = bytearray(stream)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "bare-lf"]))
        if action == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(insertions)
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif action == "bare-lf":
            data = bytearray(bytes(data).replace(b"\r\n", b"\n", draw(st.integers(1, 3))))
    return bytes(data)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    valid = b"".join(draw(st.lists(valid_request, min_size=1, max_size=6)))
    return draw(st.one_of(st.just(valid), mutated(valid), st.binary(max_size=200)))


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({cut % (len(data) + 1) for cut in cuts}), len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


# --- what every answer must be -------------------------------------------------------------------------


def check_well_formed(response: Response) -> int:
    """Assert the answer's framing; return its status."""
    head, separator, body = response.head.partition(b"\r\n\r\n")
    assert separator, response.head
    status_line, *lines = head.split(b"\r\n")
    match = STATUS_LINE.fullmatch(status_line)
    assert match, status_line
    status = int(match[1])
    assert REASONS[status] == match[2]
    headers = {}
    for line in lines:
        field = FIELD.fullmatch(line)
        assert field, line
        headers[field[1].lower()] = field[2]
    length = int(headers[b"content-length"])
    # A HEAD answer carries the length of the body it leaves out.
    assert length == len(body) + response.bulk or (body == b"" and response.bulk == 0)
    assert response.close_after == (headers.get(b"connection") == b"close")
    assert status < 400 or response.close_after
    return status


def answer_all(connection: HttpConnection, chunks: list[bytes]) -> list[Response]:
    """Feed the chunks as a server would: each batch written before the next is asked for."""
    answers = []
    for chunk in chunks:
        batch = connection.feed(chunk)
        answers += batch
        while connection.paused:
            assert 0 < len(batch) <= MAX_BATCH
            batch = connection.feed(b"")
            answers += batch
    return answers


def check_conversation(answers: list[Response], connection: HttpConnection) -> list[int]:
    statuses = [check_well_formed(answer) for answer in answers]
    closes = [answer.close_after for answer in answers]
    assert True not in closes[:-1]  # nothing is answered after an answer that closes
    assert connection.closing == (closes[-1:] == [True])
    if connection.closing:
        assert connection.feed(b"GET / HTTP/1.1\r\n\r\n") == []
    return statuses


# --- the properties ------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams(), cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_any_stream_in_any_pieces_gets_well_formed_answers(data: bytes, cuts: list[int]) -> None:
    whole_connection = HttpConnection(app=quick_route)
    whole = check_conversation(answer_all(whole_connection, [data]), whole_connection)
    split_connection = HttpConnection(app=quick_route)
    split = check_conversation(answer_all(split_connection, pieces(data, cuts)), split_connection)
    # How the stream is cut changes nothing, except which refusal a malformed tail gets (both refuse it).
    assert len(split) == len(whole)
    assert split[:-1] == whole[:-1]
    assert (split[-1:] == whole[-1:]) or (split[-1] >= 400 and whole[-1] >= 400)


@settings(max_examples=200, deadline=None)
@given(requests=st.lists(request_and_whether_it_closes(), min_size=1, max_size=6),
       cuts=st.lists(st.integers(0, 10**6), max_size=8))
def test_well_formed_requests_are_each_answered_until_one_closes(requests: list[tuple[bytes, bool]],
                                                                 cuts: list[int]) -> None:
    connection = HttpConnection(app=quick_route)
    answers = answer_all(connection, pieces(b"".join(request for request, _ in requests), cuts))
    check_conversation(answers, connection)
    closes = [closes for _, closes in requests]
    assert len(answers) == (closes.index(True) + 1 if True in closes else len(requests))


def test_huge_numbers_are_refused_not_converted() -> None:
    huge = b"9" * 5000
    for stream, status in [
        (b"POST / HTTP/1.1\r\nContent-Length: " + huge + b"\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413),
        (b"GET /bytes/" + huge + b" HTTP/1.1\r\n\r\n", 400),
        (b"GET /sleep/" + huge + b" HTTP/1.1\r\n\r\n", 400),
    ]:
        connection = HttpConnection()
        assert check_conversation(connection.feed(stream), connection) == [status]


def test_a_body_at_the_limit_is_read_and_discarded() -> None:
    connection = HttpConnection()
    answers = connection.feed(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % MAX_BODY + b"x" * MAX_BODY)
    assert check_conversation(answers, connection) == [200]


def test_bare_lf_is_refused_as_soon_as_it_could_end_a_head() -> None:
    for stream in [b"GET / HTTP/1.1\n\n", b"GET / HTTP/1.1\nHost: test\n\n", b"GET / HTTP/1.1\r\nHost: test\n\r\n",
                   b"GET / HTTP/1.1\r\nX: a\nContent-Length: 5\r\n\r\n"]:
        connection = HttpConnection()
        assert check_conversation(connection.feed(stream), connection) == [400], stream
    assert HttpConnection().feed(b"GET / HTTP/1.1\n") == []  # an LF-ended line alone could still be anything


def test_a_pipeline_is_answered_in_bounded_batches() -> None:
    connection = HttpConnection()
    first = connection.feed(b"GET /bytes/16384 HTTP/1.1\r\n\r\n" * 2000)
    size = sum(len(answer.head) + answer.bulk for answer in first)
    assert connection.paused and MAX_BATCH_BYTES <= size < MAX_BATCH_BYTES + 17_000  # ends at the answer past it
    assert len(answer_all(connection, [b""])) + len(first) == 2000 and not connection.paused


def test_a_slow_answer_ends_its_batch() -> None:
    connection = HttpConnection(app=quick_route)
    assert len(connection.feed(b"GET / HTTP/1.1\r\n\r\n" + b"GET /cpu/1 HTTP/1.1\r\n\r\n" * 3)) == 2
    assert connection.paused
    assert len(connection.feed(b"")) == 1 and connection.paused
    assert len(connection.feed(b"")) == 1 and not connection.paused  # nothing left after it
