"""The shared HTTP/1.1 core in-process: parsing edge cases, limits at their boundaries, handler failures,
Date caching."""

from __future__ import annotations

import io
import time

import pytest

from servers.http import (
    FAILURE_LOG_BURST,
    MAX_HEADER_FIELDS,
    MAX_REQUEST_LINE,
    FailureLog,
    HttpConnection,
    Reply,
    Request,
    Response,
)

HELLO_REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


def status(response: Response) -> int:
    return int(response.head.split(b" ", 2)[1])


def header(response: Response, name: bytes) -> bytes | None:
    for line in response.head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b": ")
        if key.lower() == name.lower():
            return value
    return None


def test_byte_by_byte_gives_one_answer_at_the_last_byte() -> None:
    connection = HttpConnection()
    answers = [connection.feed(bytes([byte])) for byte in HELLO_REQUEST]
    assert answers[:-1] == [[]] * (len(HELLO_REQUEST) - 1)
    assert answers[-1][0].head.endswith(b"\r\n\r\nHello, World!")


def test_many_requests_in_one_feed_are_answered_in_order() -> None:
    answers = HttpConnection().feed(b"".join(b"GET /bytes/%d HTTP/1.1\r\n\r\n" % n for n in range(50)))
    assert [answer.bulk or int(header(answer, b"content-length")) for answer in answers] == list(range(50))


def test_empty_lines_before_a_request_are_ignored() -> None:
    assert status(HttpConnection().feed(b"\r\n\r\n" + HELLO_REQUEST)[0]) == 200


def test_body_split_across_feeds_is_consumed() -> None:
    connection = HttpConnection()
    assert connection.feed(b"POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc") == []
    answers = connection.feed(b"def" + HELLO_REQUEST)
    assert [status(answer) for answer in answers] == [200, 200]


def test_request_line_limit_is_8_KiB() -> None:
    def request_line_of(length: int) -> bytes:
        return b"GET /" + b"a" * (length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1\r\n\r\n"

    assert status(HttpConnection().feed(request_line_of(MAX_REQUEST_LINE))[0]) == 404
    assert status(HttpConnection().feed(request_line_of(MAX_REQUEST_LINE + 1))[0]) == 414
    assert status(HttpConnection().feed(b"G" * (MAX_REQUEST_LINE + 1))[0]) == 414  # no line end yet


def test_field_limit_is_100() -> None:
    def with_fields(count: int) -> bytes:
        return b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(count)) + b"\r\n"

    assert status(HttpConnection().feed(with_fields(MAX_HEADER_FIELDS))[0]) == 200
    assert status(HttpConnection().feed(with_fields(MAX_HEADER_FIELDS + 1))[0]) == 431


def test_incomplete_headers_over_64_KiB_are_refused_before_they_end() -> None:
    answers = HttpConnection().feed(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000)
    assert status(answers[0]) == 431 and answers[0].close_after


def test_an_error_answers_what_came_before_then_closes() -> None:
    connection = HttpConnection()
    answers = connection.feed(HELLO_REQUEST + b"GET / HTTP/9.9\r\n\r\n" + HELLO_REQUEST)
    assert [status(answer) for answer in answers] == [200, 505]
    assert answers[1].close_after and header(answers[1], b"connection") == b"close"
    assert connection.closing and connection.feed(HELLO_REQUEST) == []


def test_a_raising_handler_answers_500_and_the_connection_closes() -> None:
    def broken_app(request: Request) -> Reply:
        raise RuntimeError("handler bug")

    connection = HttpConnection(app=broken_app)
    answers = connection.feed(HELLO_REQUEST)
    assert status(answers[0]) == 500 and answers[0].close_after and connection.closing


def test_failures_are_logged_at_a_bounded_rate() -> None:
    stream = io.StringIO()
    log = FailureLog(stream, window_s=0.3)

    def fail(times: int) -> None:
        for _ in range(times):
            try:
                raise RuntimeError("handler bug")
            except RuntimeError as error:
                log.report("a request failed", error)

    fail(3 * FAILURE_LOG_BURST)
    assert stream.getvalue().count("RuntimeError: handler bug") == FAILURE_LOG_BURST
    time.sleep(0.3)
    fail(1)  # a new window: printed, with the count of those left out
    assert stream.getvalue().count("RuntimeError: handler bug") == FAILURE_LOG_BURST + 1
    assert f"({2 * FAILURE_LOG_BURST} more failures were not shown)" in stream.getvalue()


def test_http_1_0_keep_alive_only_when_asked() -> None:
    assert HttpConnection().feed(b"GET / HTTP/1.0\r\n\r\n")[0].close_after
    kept = HttpConnection().feed(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")[0]
    assert not kept.close_after and header(kept, b"connection") == b"keep-alive"


def test_the_plaintext_answer_is_prebuilt_and_its_date_refreshed_each_second() -> None:
    first, second = (HttpConnection().feed(HELLO_REQUEST)[0] for _ in range(2))
    if first.head is not second.head:  # a second boundary fell between them: try again
        first, second = (HttpConnection().feed(HELLO_REQUEST)[0] for _ in range(2))
    assert first.head is second.head  # the same bytes object: nothing was formatted per request
    second_now = int(time.time())
    while int(time.time()) == second_now:
        time.sleep(0.01)
    assert header(HttpConnection().feed(HELLO_REQUEST)[0], b"date") != header(first, b"date")


def test_a_repeated_request_reuses_its_parse_but_is_routed_and_counted_each_time() -> None:
    seen: list[Request] = []

    def recording_app(request: Request) -> Reply:
        seen.append(request)
        return Reply(200, request.path)

    connection = HttpConnection(app=recording_app)
    for _ in range(3):
        assert status(connection.feed(b"GET /a?x HTTP/1.1\r\nHost: test\r\n\r\n")[0]) == 200
    assert seen[0] is seen[1] is seen[2] and seen[0].path == b"/a" and connection.requests == 3
    # A different request after it is parsed anew, refusals included; the connection state still rules.
    assert connection.feed(b"HEAD /b HTTP/1.1\r\nHost: test\r\n\r\n")[0].head.endswith(b"\r\n\r\n")
    assert seen[-1].path == b"/b" and seen[-1].method == b"HEAD"
    assert status(connection.feed(b"GET /a?x HTTP/1.1\r\nHost : test\r\n\r\n")[0]) == 400
    assert connection.closing and connection.feed(b"GET /a?x HTTP/1.1\r\nHost: test\r\n\r\n") == []


# Each refused at its last byte: the byte past which no valid request can begin (none of them has ended its head).
EARLY_REFUSALS = {
    "bare CR in a field value": (b"GET / HTTP/1.1\r\nx:\rTransfer-Encoding: chunked\r\n", 400),
    "empty field line ended by a bare CR": (b"GET / HTTP/1.1\r\nHost: a\r\n\rTransfer-Encoding: chunked\r\n", 400),
    "NUL in a field value": (b"GET / HTTP/1.1\r\nX: a\x00b\r\n", 400),
    "DEL in a field value": (b"GET / HTTP/1.1\r\nX: a\x7fb\r\n", 400),
    "field name not a token": (b"GET / HTTP/1.1\r\nX(y): z\r\n", 400),
    "space before the colon": (b"GET / HTTP/1.1\r\nHost : a\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n", 400),
    "dummy characters between fields": (b"GET / HTTP/1.1\r\nHost: a\r\nabc\r\n", 400),
    "duplicate Content-Length, equal": (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n", 400),
    "duplicate Content-Length, different": (b"POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 2\r\n", 400),
    "overflowing Content-Length": (b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n", 413),
    "Content-Length not digits": (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n", 400),
    "Transfer-Encoding": (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", 411),
    "bare LF after the start line": (b"GET / HTTP/1.1\n", 400),
    "bare LF after a field": (b"GET / HTTP/1.1\r\nHost: a\n", 400),
    "bare LF before a request": (b"\n", 400),
    "space after the start line": (b"GET / HTTP/1.1 ", 400),
    "CR not followed by LF after the version": (b"GET / HTTP/1.1\rX", 400),
    "invalid version: a letter": (b"GET / HTTP/1.1x", 400),
    "invalid version: two digits": (b"GET / HTTP/11", 400),
    "invalid version: no minor": (b"GET / HTTP/3\r", 400),
    "invalid version: lower case": (b"GET / h", 400),
    "unsupported version": (b"GET / HTTP/2.0", 505),
    "two spaces after the method": (b"GET  ", 400),
    "target not starting with /": (b"GET h", 400),
    "control character in the target": (b"GET /a\x01", 400),
    "obs-text in the target": (b"GET /caf\xe9", 400),
    "method not a token": (b"G(", 400),
    "method not implemented": (b"BREW ", 501),
    "request line too long": (b"GET /" + b"a" * (MAX_REQUEST_LINE - 5) + b"b", 414),
}


@pytest.mark.parametrize("case", EARLY_REFUSALS)
def test_refused_at_the_first_byte_that_makes_it_invalid(case: str) -> None:
    stream, expected = EARLY_REFUSALS[case]
    connection = HttpConnection()
    for byte in stream[:-1]:
        assert connection.feed(bytes([byte])) == [], case
    answers = connection.feed(stream[-1:])
    assert [status(answer) for answer in answers] == [expected] and answers[0].close_after
    assert [status(answer) for answer in HttpConnection().feed(stream)] == [expected]  # at once: the same answer
    assert HttpConnection().feed(stream[:-1]) == []


def test_field_values_may_hold_htab_and_obs_text() -> None:
    request = b"GET / HTTP/1.1\r\nHost: test\r\nX-Name: caf\xe9\t au lait \r\nContent-Length: 0\r\n\r\n"
    assert status(HttpConnection().feed(request)[0]) == 200
    connection = HttpConnection()
    assert [status(answer) for byte in request for answer in connection.feed(bytes([byte]))] == [200]
