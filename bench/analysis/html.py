"""A Document as one static HTML page (Jinja2 templates in bench/analysis/templates): its style and its
script inlined, plots and flame graphs referenced by relative paths, so it works from file:// offline."""

from __future__ import annotations

import re
from functools import cache

import jinja2
from markupsafe import Markup, escape

from bench.analysis.document import Bullets, Document, Figure, Flames, Table, Text
from bench.analysis.tables import MEANINGS

INLINE = [  # inline Markdown, applied to escaped text
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
]


def inline(text: str) -> Markup:
    html = str(escape(text))
    for pattern, replacement in INLINE:
        html = pattern.sub(replacement, html)
    return Markup(html)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("bench.analysis", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(inline=inline, slug=slug)
    env.tests.update(text=lambda b: isinstance(b, Text), bullets=lambda b: isinstance(b, Bullets),
                     table=lambda b: isinstance(b, Table), figure=lambda b: isinstance(b, Figure),
                     flames=lambda b: isinstance(b, Flames))
    return env


def page(document: Document) -> str:
    return environment().get_template("page.html.j2").render(document=document, meanings=MEANINGS)
