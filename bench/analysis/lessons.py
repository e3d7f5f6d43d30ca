"""What this run shows: one short paragraph per lesson the run's records support, each with its numbers and
the comparison that makes it (pure: records in, paragraphs out).

A lesson whose points the run did not measure is left out; one the data contradicts is said as measured.
Figures are medians of the ok repeats; two of them tie when their repeats' [min–max] ranges overlap or their
medians are closer than TIE_SHARE. A lesson says which of its points were flagged (disturbed, client-bound).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.analysis.document import Section, Text
from bench.analysis.summary import Cell, median, summarize
from bench.config import Workload, workload
from bench.results import Record

# Medians closer than this tie whatever their spread: single runs on the shared 2-core hosts vary more.
TIE_SHARE = 0.1
# The models that run every handler on one thread, one at a time (the threaded, pool and process models do not).
# The lessons are prose about particular models (poll against epoll, select's wall): they name them, as the
# descriptions do (bench/subjects.py); nothing here decides what runs.
FLOOR_SERVER, REFERENCE_SERVER = "floor", "nginx"
EVENT_LOOPS = ("select", "poll", "epoll", "epoll-et", "asyncio", "io-uring")
MULTIPLEXERS = ("select", "poll", "epoll")
HEADING = "What this run shows"


@dataclass(frozen=True)
class Quoted:
    """One number a lesson quotes: the median of a cell's ok repeats."""

    server: str
    workload: str
    connections: int
    metric: str  # a bench.analysis.metrics.METRICS key
    value: float


@dataclass(frozen=True)
class Lesson:
    title: str
    text: str
    numbers: tuple[Quoted, ...]


class Measured:
    """The run's cells, looked up by workload, server and connection count."""

    def __init__(self, records: list[Record]) -> None:
        self.cells = {c.key: c for c in summarize(records)}
        self.ok = Counter((r.workload, r.server, r.connections) for r in records if r.status == "ok")
        self.workloads = [w for name in dict.fromkeys(r.workload for r in records) if (w := workload(name))]

    def find(self, kind: Callable[[Workload], bool]) -> list[Workload]:
        return [w for w in self.workloads if kind(w)]

    def at(self, name: str, server: str, connections: int) -> Cell | None:
        """The cell if its server was measured there (an ok median), else None."""
        cell = self.cells.get((name, server, connections))
        return cell if cell is not None and median(cell, "requests_per_s") is not None else None

    def counts(self, name: str) -> list[int]:
        """The connection counts `name` was run at, largest first."""
        return sorted({n for (w, _, n) in self.cells if w == name}, reverse=True)

    def common(self, name: str, servers: tuple[str, ...]) -> int | None:
        """The largest connection count at which every one of `servers` was measured on `name`."""
        return next((n for n in self.counts(name) if all(self.at(name, s, n) for s in servers)), None)

    def broken(self, name: str, server: str) -> Cell | None:
        """The server's first cell on `name` with no measurement (failed or unsupported), else None."""
        return next((c for c in self.cells.values() if c.workload == name and c.server == server
                     and median(c, "requests_per_s") is None), None)


def tie(a: Cell, b: Cell, metric: str) -> bool:
    """The repeats' [min–max] ranges overlap, or the medians are closer than TIE_SHARE."""
    x, y = a.stats[metric], b.stats[metric]
    return (x.low <= y.high and y.low <= x.high) or abs(x.median / y.median - 1) < TIE_SHARE


@dataclass
class Paragraph:
    """Collects the numbers and cells a lesson quotes while its text is written."""

    measured: Measured
    numbers: list[Quoted] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)

    def value(self, cell: Cell, metric: str) -> float:
        found = median(cell, metric)
        self.numbers.append(Quoted(cell.server, cell.workload, cell.connections, metric, found))
        if cell not in self.cells:
            self.cells.append(cell)
        return found

    def rps(self, cell: Cell) -> str:
        return f"{self.value(cell, 'requests_per_s'):,.0f}"

    def cpu(self, cell: Cell) -> str:
        return f"{self.value(cell, 'cpu_us_per_request'):,.1f}"

    def ratio(self, a: Cell, b: Cell, metric: str, of: str = "") -> str:
        """a's median over b's: '3.1×', '267×', or '1.0×, a tie within the spread' (`of` after the ratio)."""
        found = median(a, metric) / median(b, metric)
        text = (f"{found:.1f}×" if found < 10 else f"{found:,.0f}×") + of
        return f"{text}, a tie within the spread" if tie(a, b, metric) else text

    def lesson(self, title: str, text: str) -> Lesson:
        flagged: dict[tuple[str, int, str], list[str]] = {}  # (workload, connections, why) -> servers
        for c in self.cells:
            if why := flags(c, self.measured.ok[c.key]):
                flagged.setdefault((c.workload, c.connections, why), []).append(c.server)
        if flagged:
            text += " Flagged points, read with care: " + "; ".join(
                f"{', '.join(servers)} on {name} at {n} ({why})" for (name, n, why), servers in flagged.items()) + "."
        return Lesson(title, text, tuple(self.numbers))


def flags(cell: Cell, repeats: int) -> str:
    """Why a cell's figures may be the host's more than the model's; empty when none."""
    found = [f"disturbed by other load in {cell.disturbed} of {repeats} repeats"] * bool(cell.disturbed)
    found += [f"client-bound in {cell.client_bound} of {repeats}"] * bool(cell.client_bound)
    return ", ".join(found)


def more(a: Cell, b: Cell, metric: str) -> bool:
    """a's median is above b's, beyond the spread."""
    return not tie(a, b, metric) and median(a, metric) > median(b, metric)


def baseline(measured: Measured) -> Lesson | None:
    """The references on plaintext: the C server and the cheapest Python loop, and the best model beside them."""
    at = measured.common("plaintext", (FLOOR_SERVER, REFERENCE_SERVER))
    if at is None:
        return None
    p = Paragraph(measured)
    nginx, floor = measured.at("plaintext", REFERENCE_SERVER, at), measured.at("plaintext", FLOOR_SERVER, at)
    text = (f"On plaintext at {at} connections {REFERENCE_SERVER} (C, one worker) served {p.rps(nginx)} requests/s "
            f"at {p.cpu(nginx)} µs of server CPU per request, and the {FLOOR_SERVER} (the cheapest Python loop, "
            f"no HTTP handling) {p.rps(floor)} at {p.cpu(floor)} µs.")
    models = [c for (w, s, n), c in measured.cells.items()
              if w == "plaintext" and n == at and s not in (FLOOR_SERVER, REFERENCE_SERVER) and measured.at(w, s, n)]
    if models:
        best = min(models, key=lambda c: median(c, "cpu_us_per_request"))
        of_floor = f" the {FLOOR_SERVER}'s CPU"
        figures = (f"{p.cpu(best)} µs for {p.rps(best)} requests/s "
                   f"({p.ratio(best, floor, 'cpu_us_per_request', of_floor)})")
        text += (f" The cheapest model, {best.server}, spent {figures}: what a model spends above the "
                 f"{FLOOR_SERVER} is HTTP handling and its I/O model." if more(best, floor, "cpu_us_per_request")
                 else f" The cheapest model, {best.server}, cost no more than the {FLOOR_SERVER} in this run: "
                      f"{figures}.")
    return p.lesson(f"The baseline: {FLOOR_SERVER} and {REFERENCE_SERVER}", text)


def plaintext_tie(measured: Measured) -> Lesson | None:
    """With no idle connections select, poll and epoll cost about the same."""
    at = measured.common("plaintext", MULTIPLEXERS)
    if at is None:
        return None
    p = Paragraph(measured)
    cells = [measured.at("plaintext", s, at) for s in MULTIPLEXERS]
    figures = ", ".join(f"{c.server} {p.cpu(c)} µs" for c in cells)
    if all(tie(a, b, "cpu_us_per_request") for a in cells for b in cells):
        text = (f"With no idle connections the multiplexer hardly matters: on plaintext at {at} connections, "
                f"server CPU per request was {figures}, a tie within the spread (the repeats' ranges overlap or "
                f"the medians are within {TIE_SHARE:.0%}).")
    else:
        text = (f"select, poll and epoll did not tie on plaintext at {at} connections in this run: server CPU per "
                f"request was {figures}.")
    return p.lesson("Plaintext alone: select, poll and epoll", text)


def idle_connections(measured: Measured) -> Lesson | None:
    """poll pays for every registered descriptor on every call, epoll for the ready ones."""
    both = [(w, n) for w in sorted(measured.find(lambda w: w.idle > 0), key=lambda w: w.idle)
            if (n := measured.common(w.name, ("poll", "epoll"))) is not None]
    if not both:
        return None
    p = Paragraph(measured)
    (most, at), smaller = both[-1], both[:-1]
    poll, epoll = measured.at(most.name, "poll", at), measured.at(most.name, "epoll", at)
    if more(poll, epoll, "cpu_us_per_request"):
        text = (f"Beside {most.idle:,} idle connections ({at} active) poll spent {p.cpu(poll)} µs of server CPU per "
                f"request against epoll's {p.cpu(epoll)} ({p.ratio(poll, epoll, 'cpu_us_per_request')}) and served "
                f"{p.rps(poll)} requests/s against {p.rps(epoll)}: poll hands the kernel every descriptor on every "
                f"call, epoll only reports the ready ones.")
    else:
        text = (f"poll did not fall behind epoll beside {most.idle:,} idle connections in this run: {p.cpu(poll)} "
                f"against {p.cpu(epoll)} µs of server CPU per request ({p.ratio(poll, epoll, 'cpu_us_per_request')}), "
                f"{p.rps(poll)} against {p.rps(epoll)} requests/s.")
    for w, n in smaller:
        poll, epoll = measured.at(w.name, "poll", n), measured.at(w.name, "epoll", n)
        text += f" Beside {w.idle:,}: {p.cpu(poll)} against {p.cpu(epoll)} µs."
    if blocked := next((c for w, _ in both if (c := measured.broken(w.name, "blocking"))), None):
        text += f" blocking served nothing beside idle connections ({blocked.workload}: {blocked.failure})."
    return p.lesson("Idle connections: poll against epoll", text)


def select_wall(measured: Measured) -> Lesson | None:
    """select(2) cannot watch descriptors at or past FD_SETSIZE."""
    for w in sorted(measured.find(lambda w: w.idle > 0), key=lambda w: w.idle):
        if (cell := measured.broken(w.name, "select")) is not None:
            state = "not run" if cell.unsupported else "failed"
            text = f"select was {state} beside {w.idle:,} idle connections: {cell.failure}."
            return Paragraph(measured).lesson("select's wall: FD_SETSIZE", text)
    return None


def sleep_workloads(measured: Measured) -> list[Workload]:
    return measured.find(lambda w: w.path.startswith("/sleep/") and not w.close)


def blocking_handler(measured: Measured) -> Lesson | None:
    """Threads overlap handlers that block; one event loop runs them one after the other."""
    for w in sleep_workloads(measured):
        for at in measured.counts(w.name):
            threaded = measured.at(w.name, "threaded", at)
            cells = sorted((c for s in EVENT_LOOPS if (c := measured.at(w.name, s, at))),
                           key=lambda c: median(c, "requests_per_s"))
            if threaded and cells:
                break
        else:
            continue
        p = Paragraph(measured)
        best = cells[-1]
        broken = [c for s in EVENT_LOOPS if (c := measured.cells.get((w.name, s, at))) and not measured.at(*c.key)]
        sleep_ms = int(w.path.removeprefix("/sleep/"))
        if more(threaded, best, "requests_per_s"):
            text = (f"On {w.path} at {at} connections threaded served {p.rps(threaded)} requests/s, "
                    f"{p.ratio(threaded, best, 'requests_per_s')} the best one-thread event loop ({best.server}, "
                    f"{p.rps(best)}; the others from {p.rps(cells[0])}): its threads wait in their handlers at "
                    f"once, while one loop runs one {sleep_ms} ms handler at a time, at most "
                    f"{1000 / sleep_ms:,.0f} a second.")
            if broken:
                text += (f" {', '.join(c.server for c in broken)} served nothing measurable there "
                         f"({broken[0].failure}).")
        else:
            text = (f"threaded did not out-serve the event loops on {w.path} at {at} connections in this run: "
                    f"{p.rps(threaded)} requests/s against {p.rps(best)} for {best.server}.")
        return p.lesson("A blocking handler: threads against one loop", text)
    return None


def pool(measured: Measured) -> Lesson | None:
    """epoll-pool pays a hand-off per request, which pays back only when handlers block."""
    p = Paragraph(measured)
    parts = []
    if (at := measured.common("plaintext", ("epoll-pool", "epoll"))) is not None:
        pooled, epoll = measured.at("plaintext", "epoll-pool", at), measured.at("plaintext", "epoll", at)
        figures = (f"{p.cpu(pooled)} µs of server CPU per request against epoll's {p.cpu(epoll)} "
                   f"({p.ratio(pooled, epoll, 'cpu_us_per_request')}), {p.rps(pooled)} against {p.rps(epoll)} "
                   f"requests/s")
        parts.append(f"On plaintext at {at} connections epoll-pool spent {figures}: handing each request to a "
                     f"worker thread and back costs more than answering it."
                     if more(pooled, epoll, "cpu_us_per_request") else
                     f"epoll-pool cost no more than epoll on plaintext at {at} connections in this run: {figures}.")
    for w in sleep_workloads(measured):
        if (at := measured.common(w.name, ("epoll-pool", "blocking"))) is None:
            continue
        pooled, blocking = measured.at(w.name, "epoll-pool", at), measured.at(w.name, "blocking", at)
        figures = (f"{p.rps(pooled)} requests/s against blocking's {p.rps(blocking)} "
                   f"({p.ratio(pooled, blocking, 'requests_per_s')})")
        parts.append(f"On {w.path} at {at} connections its workers overlap the waiting handlers: {figures}."
                     if more(pooled, blocking, "requests_per_s") else
                     f"On {w.path} at {at} connections epoll-pool did not out-serve blocking in this run: {figures}.")
        break
    return p.lesson("The thread pool's hand-off: epoll-pool", " ".join(parts)) if parts else None


def churn(measured: Measured) -> Lesson | None:
    """A new connection per request: a thread per connection starts and ends a thread per request."""
    for w in measured.find(lambda w: w.close):
        if (at := measured.common(w.name, ("threaded", "epoll"))) is None:
            continue
        p = Paragraph(measured)
        threaded, epoll = measured.at(w.name, "threaded", at), measured.at(w.name, "epoll", at)
        figures = (f"{p.cpu(threaded)} µs of server CPU per request against epoll's {p.cpu(epoll)} "
                   f"({p.ratio(threaded, epoll, 'cpu_us_per_request')}), {p.rps(threaded)} against "
                   f"{p.rps(epoll)} requests/s")
        if more(threaded, epoll, "cpu_us_per_request"):
            text = (f"Under churn (a new connection per request, {at} at a time) threaded spent {figures}: it starts "
                    f"and ends a thread for every connection.")
            if blocking := measured.at(w.name, "blocking", at):
                text += f" blocking, one thread for all of them, spent {p.cpu(blocking)} µs."
        else:
            text = f"threaded cost no more than epoll under churn ({at} connections) in this run: {figures}."
        return p.lesson("A thread per connection under churn", text)
    return None


LESSONS = (baseline, plaintext_tie, idle_connections, select_wall, blocking_handler, pool, churn)


def lessons(records: list[Record]) -> list[Lesson]:
    """The paragraphs the records support, in reading order."""
    measured = Measured(records)
    return [found for lesson in LESSONS if (found := lesson(measured)) is not None]


def section(found: list[Lesson]) -> Section:
    """The report's opening section (report.md and report.html)."""
    intro = Text(f"Generated from this run's records: medians of the ok repeats; two figures tie when their repeats' "
                 f"[min–max] ranges overlap or their medians are within {TIE_SHARE:.0%}. A lesson this run did not "
                 f"measure is left out.")
    if not found:
        return Section(HEADING, [intro, Text("This run measured none of the points the lessons compare.")])
    return Section(HEADING, [intro, *(Text(f"**{lesson.title}.** {lesson.text}") for lesson in found)])
