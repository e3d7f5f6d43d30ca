"""A report as data: sections of paragraphs, tables, figures and flame graphs, built once from a run and
written twice, as report.md (here) and as report.html (bench/analysis/html.py).

Text is inline Markdown (**bold**, *italic*, `code`, [link](href)): the HTML page converts just that."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# What a table entry's badge says, and its mark in report.md (no mark: the entry's text says it).
BADGE_MARKS = {"client-bound": "†", "disturbed": "‡", "errors": "§", "unsupported": "", "failed": ""}


@dataclass(frozen=True)
class Badge:
    kind: str  # a BADGE_MARKS key
    reason: str  # the evidence, one line


@dataclass(frozen=True)
class Entry:
    """One table cell: its text, the number it sorts by, and what makes it less than a clean measurement."""

    text: str
    value: float | None = None
    badges: tuple[Badge, ...] = ()

    @property
    def marks(self) -> str:
        return "".join(BADGE_MARKS[b.kind] for b in self.badges)


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[Entry]]
    title: str | None = None  # a ### heading above it
    align: str = ""  # per column, "l" or "r"; default: the first left, the others right

    def aligned(self, index: int) -> str:
        return self.align[index] if self.align else "l" if index == 0 else "r"


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Figure:
    """A plot: `path` (relative to the report) is the PNG; the SVG beside it is what the HTML page shows."""

    alt: str
    path: str

    @property
    def svg(self) -> str:
        return self.path.removesuffix(".png") + ".svg"


@dataclass(frozen=True)
class Flame:
    """An interactive flame graph (its own script: click zooms, Ctrl-F or its Search button searches)."""

    label: str
    path: str  # relative to the report
    height: int  # the SVG's own height in pixels: the frame that holds it is as tall


@dataclass(frozen=True)
class Flames:
    graphs: list[Flame]


Block = Text | Bullets | Table | Figure | Flames


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2  # of its heading: 2 (##) or 3 (###)


@dataclass
class Document:
    title: str  # plain text; `code` allowed
    intro: list[Block]
    sections: list[Section]


def page_of(run_dir: Path) -> Path | None:
    """What a link to a run opens: its report.html, else its report.md (a run not redrawn since pages existed)."""
    return next((run_dir / name for name in ("report.html", "report.md") if (run_dir / name).exists()), None)


def table_lines(table: Table) -> list[str]:
    def row(texts: list[str]) -> str:
        return "|" + "|".join(f" {text} " if text else " " for text in texts) + "|"

    rule = "|" + "|".join("---" if table.aligned(i) == "l" else "---:" for i in range(len(table.columns))) + "|"
    return [row(table.columns), rule,
            *(row([e.text + (f" {e.marks}" if e.marks else "") for e in entries]) for entries in table.rows)]


def block_lines(block: Block) -> list[str]:
    match block:
        case Text(text):
            return [text, ""]
        case Bullets(items):
            return [*(f"- {item}" for item in items), ""]
        case Table():
            return [*([f"### {block.title}", ""] if block.title else []), *table_lines(block), ""]
        case Figure(alt, path):
            return [f"![{alt}]({path})", ""]
        case Flames():
            return []  # report.md links them from its tables
    raise TypeError(block)


def markdown(document: Document) -> str:
    lines = [f"# {document.title}", ""]
    for block in document.intro:
        lines += block_lines(block)
    for section in document.sections:
        lines += [f"{'#' * section.level} {section.title}", ""]
        for block in section.blocks:
            lines += block_lines(block)
    return "\n".join(lines)
