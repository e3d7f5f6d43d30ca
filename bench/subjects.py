"""Every server a sweep can measure, described once, as data: our models, the references, production
peers and a user's own (`--subject FILE.toml`).

bench decides what runs, how it starts, how many workers it gets and what is unsupported from these
descriptions alone: no other module of bench names a server. A description says how to start the
server (a command template), which routes it serves and so which workloads apply, and its limits as
facts. The smallest user file:

    name = "mine"
    command = ["python3", "{dir}/server.py", "{host}", "{port}"]
    routes = ["/"]

Placeholders in `command` and `workers`: {host} {port} (required), {workers} (a worker count, in
`workers` only), {python} (the servers' interpreter as the runner runs it, with perf's options when
profiled), {dir} (the subject file's folder; mounted read-only in the docker runner), {scratch} (a
writable directory of the server's own), {timeout} (seconds a connection may stay idle: a sweep's
group of points). The docker runner starts `command` in the swissknife image, or in `image` when given
(which then needs nsenter to enter the server's namespace).
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROUTES = ("/", "/bytes/N", "/sleep/MS", "/cpu/US")
ROUTES_ARGUMENTS = {"bytes": "N", "sleep": "MS", "cpu": "US"}  # a route's name -> its argument's letter
CATEGORIES = ("model", "reference", "peer", "user")  # in the order reports group them
# How the handlers of different connections overlap: a blocking one (/sleep) stalls the others ("serial"),
# or not, because each runs on a thread, a greenlet that yields, or in one of several worker processes.
HANDLERS = ("serial", "threads", "greenlets", "processes")
PLACEHOLDERS = ("host", "port", "workers", "python", "dir", "scratch", "timeout")
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")  # a file, container and column name as it is
# select(2) watches descriptors below FD_SETSIZE only (glibc's fd_set; servers/select_server.py's too).
FD_SETSIZE = 1024


class SubjectError(ValueError):
    """A description that cannot be used, with the one line that says why."""


@dataclass(frozen=True)
class Limits:
    """What bounds a subject, as facts bench plans by."""

    fd_setsize: int | None = None  # it watches descriptors below this only (select)
    # "one": one process holds every connection, bounded by its open-file limit; "workers": bench starts
    # as many worker processes as a point's connections need (each under the limit), through `workers`.
    processes: str = "one"
    thread_per_connection: bool = False  # bounded by the threads the kernel allows one process


@dataclass(frozen=True)
class Subject:
    name: str
    category: str  # one of CATEGORIES
    model: str  # the I/O model in words
    command: tuple[str, ...]
    routes: tuple[str, ...] = ("/",)
    workers: tuple[str, ...] = ()  # appended to the command when bench sets a worker count
    default_workers: int | None = None  # {workers} when bench has no count of its own
    limits: Limits = Limits()
    keep_alive_only: bool = False  # answers only kept-alive connections (no `Connection: close` churn)
    handlers: str = "serial"  # one of HANDLERS
    python_frames: bool = False  # a Python server started through {python}: perf can show its functions
    io_uring: bool = False  # uses io_uring: engines whose seccomp profile blocks it need an option for it
    tools: tuple[tuple[str, str], ...] = ()  # (program, Debian package) the process runner needs on the host
    image: str | None = None  # the docker runner's image for it (None: the swissknife image)
    directory: str | None = None  # {dir}: the folder of the file that described it

    def serves(self, route: str) -> bool:
        return route in self.routes

    def argv(self, python: Sequence[str], values: dict[str, str], workers: int | None = None) -> list[str]:
        """The command with its placeholders filled; `python`: the interpreter and its options, the words
        that stand for a "{python}" word."""
        if workers is None:
            workers = self.default_workers
        template = [*self.command, *(self.workers if workers is not None else ())]
        values = {"workers": str(workers), "dir": self.directory or ".", "python": python[0], **values}
        argv: list[str] = []
        for word in template:
            argv += python if word == "{python}" else [word.format_map(values)]
        return argv

    def describe(self) -> dict:
        """The description as results.json keeps it (SweepConfig's subjects, through asdict), which
        `--list-subjects --json` prints too."""
        return asdict(self)


def placeholders(words: tuple[str, ...]) -> set[str]:
    return {name for word in words for _, name, _, _ in string.Formatter().parse(word) if name is not None}


def check(subject: Subject) -> Subject:
    """`subject` if it can be used, else SubjectError naming the field."""
    where = f"subject {subject.name!r}"
    if not NAME.fullmatch(subject.name):
        raise SubjectError(f"subject name {subject.name!r}: lower-case letters, digits, '.', '_' or '-', "
                           "at most 40, starting with a letter or digit")
    if subject.category not in CATEGORIES:
        raise SubjectError(f"{where}: category {subject.category!r} is not one of {', '.join(CATEGORIES)}")
    if not subject.command or not all(isinstance(w, str) and w for w in subject.command):
        raise SubjectError(f"{where}: command must be a non-empty list of words")
    try:
        used = placeholders(subject.command) | placeholders(subject.workers)
    except ValueError as error:
        raise SubjectError(f"{where}: command: {error} (write {{{{ and }}}} for literal braces)") from None
    if unknown := sorted(used - set(PLACEHOLDERS)):
        raise SubjectError(f"{where}: unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                           f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    for required in ("host", "port"):
        if required not in placeholders(subject.command):
            raise SubjectError(f"{where}: command must contain {{{required}}}, where bench puts the server's "
                               f"{'address' if required == 'host' else 'port'}")
    if "workers" in placeholders(subject.command):
        raise SubjectError(f"{where}: {{workers}} belongs in `workers` (the words added when bench sets a count)")
    if subject.workers and "workers" not in placeholders(subject.workers):
        raise SubjectError(f"{where}: workers must contain {{workers}}")
    if not subject.routes or (unknown := [r for r in subject.routes if r not in ROUTES]):
        raise SubjectError(f"{where}: unknown route(s) {', '.join(map(repr, unknown or ['(none)']))}; "
                           f"routes are {', '.join(ROUTES)}")
    if "/" not in subject.routes:
        raise SubjectError(f"{where}: routes must include \"/\" (bench checks every server with GET /)")
    if subject.handlers not in HANDLERS:
        raise SubjectError(f"{where}: handlers is one of {', '.join(HANDLERS)}, not {subject.handlers!r}")
    if subject.limits.processes not in ("one", "workers"):
        raise SubjectError(f"{where}: limits.processes is \"one\" or \"workers\", not {subject.limits.processes!r}")
    if subject.limits.processes == "workers" and not subject.workers:
        raise SubjectError(f"{where}: limits.processes = \"workers\" needs `workers`, the words that set a count")
    return subject


# The fields a user's file may set, with their types; anything else is refused by name.
FILE_FIELDS = {"name": str, "command": list, "routes": list, "model": str, "workers": list,
               "default_workers": int, "image": str, "limits": dict, "keep_alive_only": bool,
               "python_frames": bool, "io_uring": bool, "category": str, "handlers": str}
LIMIT_FIELDS = {"fd_setsize": int, "processes": str, "thread_per_connection": bool}


def load_file(path: Path) -> Subject:
    """A user's subject from a TOML file; SubjectError with one line naming the file and the field."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise SubjectError(f"{path}: cannot read it ({error.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SubjectError(f"{path}: not valid TOML ({error})") from None
    try:
        return check(from_document(document, path.resolve().parent))
    except SubjectError as error:
        raise SubjectError(f"{path}: {error}") from None


def from_document(document: dict, directory: Path) -> Subject:
    for required in ("name", "command", "routes"):
        if required not in document:
            raise SubjectError(f"missing field {required!r} (the smallest file has name, command and routes)")
    _typed(document, FILE_FIELDS, "")
    limits = document.get("limits", {})
    _typed(limits, LIMIT_FIELDS, "limits.")
    for key in ("command", "routes", "workers"):
        if not all(isinstance(word, str) for word in document.get(key, [])):
            raise SubjectError(f"field {key!r} must be a list of strings")
    return Subject(
        name=document["name"], category=document.get("category", "user"),
        model=document.get("model", "a user's server"), command=tuple(document["command"]),
        routes=tuple(document["routes"]), workers=tuple(document.get("workers", ())),
        default_workers=document.get("default_workers"), limits=Limits(**limits),
        keep_alive_only=document.get("keep_alive_only", False), handlers=document.get("handlers", "serial"),
        python_frames=document.get("python_frames", False),
        io_uring=document.get("io_uring", False), image=document.get("image"), directory=str(directory))


def _typed(document: dict, known: dict[str, type], prefix: str) -> None:
    for key, value in document.items():
        if key not in known:
            raise SubjectError(f"unknown field {prefix}{key!r}; fields: {', '.join(prefix + k for k in known)}")
        if not isinstance(value, known[key]) or (known[key] is int and isinstance(value, bool)):
            raise SubjectError(f"field {prefix}{key!r} must be a {known[key].__name__}, not {value!r}")


# --- the built-in subjects ------------------------------------------------------------------------

OUR_TIMEOUTS = ("--header-timeout", "{timeout}", "--idle-timeout", "{timeout}")


def ours(name: str, model: str, limits: Limits = Limits(), workers: bool = False, **facts: object) -> Subject:
    """One of our models: `python3 -m servers NAME` (servers/__main__.py), every route."""
    return Subject(name, "model", model, ("{python}", "-m", "servers", name, "--host", "{host}", "--port", "{port}",
                                          *OUR_TIMEOUTS), ROUTES,
                   workers=("--workers", "{workers}") if workers else (), limits=limits, python_frames=True,
                   **facts)


THREADS = Limits(thread_per_connection=True)
PEER_APP = "servers.peers"  # the peers' minimal apps (servers/peers/): the same work as our routes
# gunicorn: one worker process; the keep-alive outlasts a sweep's group; no access log on the hot path.
GUNICORN = ("{python}", "-m", "gunicorn", "--bind", "[{host}]:{port}", "--workers", "1", "--keep-alive", "{timeout}",
            "--timeout", "{timeout}", "--worker-connections", "20000", "--log-level", "warning")

BUILT_IN: tuple[Subject, ...] = (
    ours("blocking", "one connection at a time: accept, then blocking recv/send until it closes"),
    ours("threaded", "a thread per connection, blocking I/O (the GIL takes turns)", THREADS, workers=True,
         handlers="threads"),
    ours("select", "one thread, select(2) over descriptor sets rebuilt every call", Limits(fd_setsize=FD_SETSIZE)),
    ours("poll", "one thread, poll(2) over the whole descriptor list every call"),
    ours("epoll", "one thread, epoll(7) level-triggered: the kernel keeps the interest list"),
    ours("epoll-et", "one thread, epoll(7) edge-triggered: read until a short read"),
    ours("epoll-pool", "an epoll loop handing each request to a pool of threads (the original report's design)",
         workers=True, handlers="threads"),
    ours("asyncio", "asyncio's event loop (selectors: epoll) with protocol callbacks"),
    ours("reuseport", "a process per worker, each its own epoll loop and SO_REUSEPORT listener",
         Limits(processes="workers"), workers=True, handlers="processes"),
    ours("io-uring", "one thread, io_uring completions (liburing) instead of readiness", io_uring=True),
    Subject("floor", "reference", "the cheapest Python loop: epoll, a prebuilt answer to kept-alive GET /",
            ("{python}", "-m", "servers", "floor", "--host", "{host}", "--port", "{port}", *OUR_TIMEOUTS),
            ("/",), keep_alive_only=True, python_frames=True),
    Subject("nginx", "reference", "C, event-driven (epoll), one worker: the kernel-bound baseline",
            # bench.nginx writes its files into {scratch}, then becomes nginx.
            ("{python}", "-m", "bench.nginx", "{scratch}", "{host}", "{port}"), ("/", "/bytes/N"),
            workers=("{workers}",), default_workers=1, limits=Limits(processes="workers"),
            tools=(("nginx", "nginx-light"),)),
    Subject("uvicorn", "peer", "uvicorn: ASGI on uvloop (libuv) with the httptools parser",
            ("{python}", "-m", "uvicorn", f"{PEER_APP}.asgi_app:app", "--host", "{host}", "--port", "{port}",
             "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
             "--timeout-keep-alive", "{timeout}", "--backlog", "4096"), ROUTES, python_frames=True),
    Subject("granian", "peer", "granian: a Rust HTTP core (hyper, tokio) calling an ASGI app",
            ("{python}", "-m", "granian", "--interface", "asgi", "--host", "{host}", "--port", "{port}",
             "--workers", "1", "--log-level", "warning", "--no-ws", f"{PEER_APP}.asgi_app:app"),
            ROUTES, python_frames=True),
    Subject("gunicorn-sync", "peer", "gunicorn's sync worker: one request at a time, a connection per request",
            (*GUNICORN, "--worker-class", "sync", f"{PEER_APP}.wsgi_app:app"), ROUTES, python_frames=True),
    Subject("gunicorn-gthread", "peer", "gunicorn's gthread worker: a thread pool (10) behind a poll loop",
            (*GUNICORN, "--worker-class", "gthread", "--threads", "10", f"{PEER_APP}.wsgi_app:app"), ROUTES,
            python_frames=True, handlers="threads"),
    Subject("gunicorn-gevent", "peer", "gunicorn's gevent worker: greenlets over libev, blocking code made to yield",
            (*GUNICORN, "--worker-class", "gevent", f"{PEER_APP}.wsgi_app:app"), ROUTES, python_frames=True,
            handlers="greenlets"),
    Subject("aiohttp", "peer", "aiohttp's web server on asyncio", ("{python}", "-m", f"{PEER_APP}.aiohttp_app",
                                                                   "{host}", "{port}", "{timeout}"),
            ROUTES, python_frames=True),
    Subject("tornado", "peer", "tornado's HTTPServer on its IOLoop (asyncio)", ("{python}", "-m",
                                                                               f"{PEER_APP}.tornado_app", "{host}",
                                                                               "{port}", "{timeout}"),
            ROUTES, python_frames=True),
)

# Named selections, kept beside the descriptions they name.
SMOKE = ("epoll", "blocking")
GIL_SERVERS = ("threaded", "epoll-pool", "epoll", "reuseport")
DEFAULT_DIFFS = (("select", "epoll"), ("epoll", "epoll-pool"))  # differential flame graphs: A -> B


@dataclass
class Registry:
    """The subjects a process knows: the built-in ones, then those `--subject` files added."""

    subjects: dict[str, Subject] = field(default_factory=lambda: {s.name: check(s) for s in BUILT_IN})

    def add(self, subject: Subject) -> Subject:
        known = self.subjects.get(subject.name)
        if known is not None and known != subject:
            raise SubjectError(f"subject {subject.name!r} is already defined ({known.category}); choose another name")
        self.subjects[subject.name] = subject
        return subject

    def get(self, name: str) -> Subject:
        try:
            return self.subjects[name]
        except KeyError:
            raise SubjectError(f"unknown server {name!r}; choose from: {', '.join(self.subjects)}") from None

    def names(self, *categories: str) -> list[str]:
        return [s.name for s in self.subjects.values() if not categories or s.category in categories]


REGISTRY = Registry()
# Categories read from a results file (its config's subjects): its reports group servers as they ran.
DESCRIBED: dict[str, str] = {}


def get(name: str) -> Subject:
    return REGISTRY.get(name)


def remember(described: list[dict]) -> None:
    """A run's own descriptions (results.json's config.subjects), for the reports drawn from it."""
    DESCRIBED.update({d["name"]: d["category"] for d in described})


def category(name: str) -> str:
    """A server's category: as its run described it, else as bench knows it; a name neither knows: user."""
    known = REGISTRY.subjects.get(name)
    return DESCRIBED.get(name) or (known.category if known else "user")


def references() -> list[str]:
    return REGISTRY.names("reference")
