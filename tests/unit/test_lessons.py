"""What this run shows: each lesson comes from the points it compares, in the published run's own numbers, and
is left out without them; a contradicted lesson says what was measured (pure)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from bench.analysis.document import Text
from bench.analysis.lessons import HEADING, lessons, section
from bench.analysis.report import write_outputs
from bench.analysis.summary import median, summarize
from bench.results import Record, load

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "results" / "reference-docker"
RECORDS = load(REFERENCE).records

# Each lesson's title, the (workload, server) pairs whose records make it, and a (workload pattern, server) whose
# records it cannot do without.
NEEDS = {
    "The baseline: floor and nginx": ({("plaintext", "floor"), ("plaintext", "nginx")}, ("plaintext", "nginx")),
    "Plaintext alone: select, poll and epoll": ({("plaintext", s) for s in ("select", "poll", "epoll")},
                                                ("plaintext", "select")),
    "Idle connections: poll against epoll": ({("idle-10000", "poll"), ("idle-10000", "epoll")}, ("idle-*", "poll")),
    "select's wall: FD_SETSIZE": ({("idle-1000", "select")}, ("idle-*", "select")),
    "A blocking handler: threads against one loop": ({("sleep-5", "threaded"), ("sleep-5", "epoll")},
                                                     ("sleep-*", "threaded")),
    "The thread pool's hand-off: epoll-pool": ({("plaintext", "epoll-pool"), ("plaintext", "epoll")},
                                               ("*", "epoll-pool")),
    "A thread per connection under churn": ({("churn", "threaded"), ("churn", "epoll")}, ("churn", "threaded")),
}


def titles(records: list[Record]) -> list[str]:
    return [lesson.title for lesson in lessons(records)]


def test_the_published_run_supports_every_lesson_and_each_quotes_its_medians():
    found = lessons(RECORDS)
    assert [lesson.title for lesson in found] == list(NEEDS)
    cells = {c.key: c for c in summarize(RECORDS)}
    for lesson in found:
        assert lesson.numbers or lesson.title.startswith("select's wall"), lesson.title  # it quotes a reason
        for number in lesson.numbers:
            assert number.value == median(cells[number.workload, number.server, number.connections], number.metric)
            shown = f"{number.value:,.0f}" if number.metric == "requests_per_s" else f"{number.value:,.1f}"
            assert shown in lesson.text, (lesson.title, number)


@pytest.mark.parametrize("title", NEEDS)
def test_a_lesson_comes_from_its_points_alone_and_is_left_out_without_them(title):
    needed, (pattern, server) = NEEDS[title]
    assert title in titles([r for r in RECORDS if (r.workload, r.server) in needed])
    assert title not in titles([r for r in RECORDS if not (r.server == server and fnmatchcase(r.workload, pattern))])


def test_the_numbers_say_what_the_published_run_measured():
    text = {lesson.title: lesson.text for lesson in lessons(RECORDS)}
    assert ("Beside 10,000 idle connections (32 active) poll spent 98.0 µs of server CPU per request against "
            "epoll's 5.0 (20×) and served 10,138 requests/s against 196,060") in text[
        "Idle connections: poll against epoll"]
    assert ("select was not run beside 1,000 idle connections: select(2) watches descriptors below FD_SETSIZE "
            "(1024) only; 1,000 idle + 32 active connections need about 1,040.") == text["select's wall: FD_SETSIZE"]
    assert "threaded served 33,682 requests/s, 267× the best one-thread event loop (io-uring, 126" in text[
        "A blocking handler: threads against one loop"]
    assert "at most 200 a second" in text["A blocking handler: threads against one loop"]
    pool = text["The thread pool's hand-off: epoll-pool"]
    assert "epoll-pool spent 14.0 µs of server CPU per request against epoll's 4.7 (2.9×)" in pool
    assert "1,893 requests/s against blocking's 74 (26×)" in pool
    assert "a tie within the spread" in text["Plaintext alone: select, poll and epoll"]
    assert ("The cheapest model, poll, cost no more than the floor in this run: 4.5 µs for 218,195 requests/s "
            "(1.0× the floor's CPU, a tie within the spread).") in text["The baseline: floor and nginx"]


def test_an_event_loop_that_served_nothing_on_a_blocking_handler_is_named():
    failed = [replace(r, status="failed", failure="no responses in 2 s", requests_per_s=None)
              if (r.workload, r.server) == ("sleep-5", "io-uring") else r for r in RECORDS]
    text = {lesson.title: lesson.text for lesson in lessons(failed)}["A blocking handler: threads against one loop"]
    assert "the best one-thread event loop (poll, 76;" in text
    assert "io-uring served nothing measurable there (no responses in 2 s)." in text


def swapped(records: list[Record], workload: str, server: str, like: str) -> list[Record]:
    """`server`'s records on `workload` given the figures of `like`'s (same repeat): the lesson's expectation gone."""
    donor = {r.repeat: r for r in records if (r.workload, r.server) == (workload, like)}
    return [replace(donor[r.repeat], server=server) if (r.workload, r.server) == (workload, server) else r
            for r in records]


@pytest.mark.parametrize(("workload", "server", "like", "title", "measured"), [
    ("idle-10000", "poll", "epoll", "Idle connections: poll against epoll",
     "poll did not fall behind epoll beside 10,000 idle connections in this run: 5.0 against 5.0 µs of server CPU "
     "per request (1.0×, a tie within the spread)"),
    ("sleep-5", "threaded", "epoll", "A blocking handler: threads against one loop",
     "threaded did not out-serve the event loops on /sleep/5 at 256 connections in this run"),
    ("plaintext", "epoll-pool", "epoll", "The thread pool's hand-off: epoll-pool",
     "epoll-pool cost no more than epoll on plaintext at 256 connections in this run"),
    ("churn", "threaded", "epoll", "A thread per connection under churn",
     "threaded cost no more than epoll under churn (256 connections) in this run"),
    ("plaintext", "poll", "blocking", "Plaintext alone: select, poll and epoll",
     "select, poll and epoll did not tie on plaintext at 256 connections in this run"),
])
def test_a_contradicted_lesson_is_said_as_measured(workload, server, like, title, measured):
    text = {lesson.title: lesson.text for lesson in lessons(swapped(RECORDS, workload, server, like))}[title]
    assert measured in text, text


def test_a_lesson_names_its_flagged_points():
    def busy(r: Record) -> bool:
        return (r.workload, r.repeat) == ("idle-10000", 2) and r.server in ("poll", "epoll") or (
            (r.workload, r.server) == ("idle-1000", "poll"))
    loaded = [replace(r, other_cpu_share=0.5) if busy(r) else r for r in RECORDS]
    text = {lesson.title: lesson.text for lesson in lessons(loaded)}
    assert text["Idle connections: poll against epoll"].endswith(
        "Flagged points, read with care: poll, epoll on idle-10000 at 32 (disturbed by other load in 1 of 3 "
        "repeats); poll on idle-1000 at 32 (disturbed by other load in 3 of 3 repeats).")
    assert "Flagged" not in text["A blocking handler: threads against one loop"]


def test_every_report_opens_with_what_the_run_shows(tmp_path):
    document = json.loads((REFERENCE / "results.json").read_text())
    keep = {"sleep-5", "plaintext"}
    document["records"] = [asdict(r) for r in RECORDS if r.workload in keep]
    document["config"]["workloads"] = [w for w in document["config"]["workloads"] if w["name"] in keep]
    document["profiling"] = None
    (tmp_path / "results.json").write_text(json.dumps(document))
    write_outputs(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert report.index(f"## {HEADING}") < report.index("## Environment")
    assert "**A blocking handler: threads against one loop.**" in report
    assert "Idle connections" not in report.split("## Environment")[0]  # not measured: left out
    assert section([]).blocks[-1] == Text("This run measured none of the points the lessons compare.")
