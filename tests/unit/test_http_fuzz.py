"""The HTTP core fed random and mutated byte streams in random pieces: it never raises, and every answer is
well-formed."""

from __future__ import annotations

import re
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servers.http import (
    MAX_BATCH,
    MAX_BATCH_BYTES,
    MAX_BODY,
    REASONS,
    SIMPLE_REQUEST,
    Head,
    HttpConnection,
    HttpError,
    Reply,
    Request,
    Response,
    route,
    simple_request,
)

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
def request_and_whether_it_closes(draw: st.DrawFn, paths: list[bytes] = FINE_PATHS + CLOSING_PATHS,
                                  fields: list[bytes] = FINE_FIELDS + CLOSING_FIELDS) -> tuple[bytes, bool]:
    """A well-formed request, and whether the connection closes after its answer (an error, or no keep-alive)."""
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST"]))
    path = draw(st.sampled_from(paths))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    headers = draw(st.lists(st.sampled_from(fields), max_size=4, unique_by=lambda field: field.split(b":")[0]))
    body = b""
    if method == b"POST" and not any(field.startswith(b"Content-Length") for field in headers):
        body = draw(st.binary(max_size=40))
        headers.append(b"Content-Length: %d" % len(body))
    closes = (path in CLOSING_PATHS or any(field in CLOSING_FIELDS for field in headers)
              or version == b"HTTP/1.0" and b"Connection: keep-alive" not in headers)
    head = b"%s %s %s\r\n%s\r\n" % (method, path, version, b"".join(field + b"\r\n" for field in headers))
    return head + body, closes


valid_request = request_and_whether_it_closes().map(lambda pair: pair[0])


CONTROL_BYTES = [byte for byte in range(32) if byte not in b"\t\n"] + [0x7F]  # no field value may hold them
insertions = st.one_of(
    st.binary(min_size=1, max_size=8),
    st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n", b"\r\n\r\n", b" ", b":", b"\x00", b"9" * 5000,
                     b"Content-Length: " + b"7" * 4400 + b"\r\n", b"GET / HTTP/1.1\n\n", b"\t", b"\xe9"]),
    st.sampled_from(CONTROL_BYTES).map(lambda byte: bytes([byte])),
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


# --- invalid requests, of the shapes a strict parser refuses before its head ends ------------------------

small_request = request_and_whether_it_closes(FINE_PATHS, FINE_FIELDS).map(lambda pair: pair[0])
BROKEN_VERSIONS = [b"HTTP/1.1 ", b"HTTP/1.1x", b"HTTP/1.1\r", b"HTTP/01.1", b"HTTP/1.01", b"HTTP/11", b"HTTP/1",
                   b"HTTP/3", b"HTTP/", b"HTTP/1.", b"HTTP/a.1", b"http/1.1", b"HTTP 1.1", b"HTTP/1.1 HTTP/1.1",
                   b" HTTP/1.1", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"HTTP\x00/1.1"]
FRAMING_FIELDS = [b"Content-Length: 0", b"Content-Length: 5", b"content-length:5", b"Content-Length: 1, 1",
                  b"Content-Length: 99999999999999999999", b"Content-Length: -1", b"Content-Length: +5",
                  b"Transfer-Encoding: chunked", b"Transfer-Encoding : chunked"]
NOT_FIELDS = [b"dummy", b"no colon here", b" folded: value", b"\tfolded", b"X-A : b", b"X(a): b", b":empty-name",
              b"@: b", b"\x7f: b"]


@st.composite
def invalid_request(draw: st.DrawFn) -> tuple[bytes, int]:
    """A request broken in one of the ways strict framing refuses, and a byte of its damage: by the end of that
    byte's line no valid request can begin."""
    request = draw(small_request)
    head_end = request.index(b"\r\n\r\n") + 4
    line_starts = [0] + [at + 2 for at in range(head_end - 2) if request[at:at + 2] == b"\r\n"]
    shape = draw(st.sampled_from(["bare CR", "bare LF", "control byte", "version", "framing fields", "not a field"]))
    if shape in ("bare CR", "bare LF", "control byte"):  # inserted at any position in the head that breaks it
        byte = {"bare CR": b"\r", "bare LF": b"\n"}.get(shape) or bytes([draw(st.sampled_from(CONTROL_BYTES))])
        at = draw(st.integers(0, head_end - (2 if byte == b"\n" else 1)))  # an LF between the last CR and LF ends it
        # An LF put after a CR ends that line: the bare LF is then the one that followed the CR.
        return request[:at] + byte + request[at:], at + (byte == b"\n" and request[at - 1:at] == b"\r")
    if shape == "version":
        at = request.index(b" HTTP/1.") + 1
        return request[:at] + draw(st.sampled_from(BROKEN_VERSIONS)) + request[at + 8:], at
    # Field lines inserted where a field line can start: two framing fields (never both allowed), or a non-field.
    lines = draw(st.lists(st.sampled_from(FRAMING_FIELDS), min_size=2, max_size=2)) if shape == "framing fields" \
        else [draw(st.sampled_from(NOT_FIELDS))]
    at = draw(st.sampled_from(line_starts[1:]))
    inserted = b"".join(line + b"\r\n" for line in lines)
    return request[:at] + inserted + request[at:], at + len(inserted) - 1


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    valid = b"".join(draw(st.lists(valid_request, min_size=1, max_size=6)))
    broken = valid + draw(invalid_request())[0]
    return draw(st.one_of(st.just(valid), mutated(valid), st.just(broken), st.binary(max_size=200)))


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
    assert split == whole  # how the stream is cut changes nothing, not even which refusal a malformed tail gets


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


def statuses_of(stream: bytes) -> list[int]:
    connection = HttpConnection(app=quick_route)
    return check_conversation(answer_all(connection, [stream]), connection)


def assert_prefixes_refused_by_the_damaged_line(data: bytes, damage_at: int) -> None:
    """`data` is one refused request; each prefix gets the same refusal or none yet, and by the end of the line
    that holds `data[damage_at]` it has come."""
    whole = statuses_of(data)
    assert len(whole) == 1 and whole[0] >= 400, (data, whole)
    answered = [len(statuses_of(data[:end])) for end in range(len(data) + 1)]
    for end, count in enumerate(answered):
        assert statuses_of(data[:end]) == whole[:count]  # the same verdict, or none yet: never a 2xx
    assert answered == sorted(answered)  # once refused, refused: more bytes never take it back
    refused_at = answered.index(1)  # the shortest refused prefix
    assert refused_at <= data.index(b"\n", damage_at) + 1, (data, refused_at)


@settings(max_examples=300, deadline=None)
@given(case=invalid_request())
def test_every_prefix_of_an_invalid_request_gets_its_refusal_or_waits(case: tuple[bytes, int]) -> None:
    assert_prefixes_refused_by_the_damaged_line(*case)


def test_a_bare_cr_or_lf_at_every_position_of_a_head_is_refused() -> None:
    request = b"POST /bytes/5?q=1 HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nX-A: b c\r\n\r\nhello"
    head_end = request.index(b"\r\n\r\n") + 4
    for at in range(head_end):
        assert_prefixes_refused_by_the_damaged_line(request[:at] + b"\r" + request[at:], at)
        if at < head_end - 1:  # an LF between the last CR and LF would end the head, before a stray LF
            after_cr = request[at - 1:at] == b"\r"  # the LF put there ends the line: the one after it is bare
            assert_prefixes_refused_by_the_damaged_line(request[:at] + b"\n" + request[at:], at + after_cr)


def outcome(parse: Callable[[], Request | None], head: Head) -> object:
    """What a parse of one head gave: its refusal's status, or None (more bytes needed), or what it parsed."""
    try:
        request = parse()
    except HttpError as error:
        return error.status
    return request and (request, head.content_length, head.end)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams())
def test_the_shortcuts_parse_as_the_line_parser_does(data: bytes) -> None:
    lines = Head()
    expected = outcome(lambda: lines.parse(data), lines)
    if (end := data.find(b"\r\n\r\n") + 4) < 4:
        return
    whole = Head()
    if (taken := outcome(lambda: whole.whole(data, end), whole)) is not None:  # None: not well-formed, not taken
        assert taken == expected
    if simple := SIMPLE_REQUEST.fullmatch(data, 0, end):
        assert (simple_request(simple), None, end) == expected


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


def test_bare_lf_is_refused_when_it_comes() -> None:
    for stream in [b"GET / HTTP/1.1\n\n", b"GET / HTTP/1.1\nHost: test\n\n", b"GET / HTTP/1.1\r\nHost: test\n\r\n",
                   b"GET / HTTP/1.1\r\nX: a\nContent-Length: 5\r\n\r\n", b"GET / HTTP/1.1\n",
                   b"GET / HTTP/1.1\r\nX: a\n"]:
        connection = HttpConnection()
        assert check_conversation(connection.feed(stream), connection) == [400], stream


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
