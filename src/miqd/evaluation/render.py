"""Tables and the evaluation report, written as Markdown and as HTML from the same data.

One cell formatter for both, so the Markdown file and the report page can never disagree on a
number or on how a missing one is shown (always "–").
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

from miqd.evaluation.tables import Document, Section, Table
from miqd.wording import plural  # noqa: F401 - the renderers' callers count with render.plural

MISSING = "–"


def text(s: str) -> str:
    """`s` as HTML element content (quotes need no escaping there, and stay readable in the source)."""
    return html.escape(s, quote=False)


def cell(v, digits: int = 4) -> str:
    """A cell as text: "–" for a missing (None / NaN) value, floats with `digits` decimals."""
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) or (hasattr(v, "dtype") and v.dtype.kind in "iu"):
        return str(int(v))
    if isinstance(v, float) or (hasattr(v, "dtype") and v.dtype.kind == "f"):
        return MISSING if math.isnan(v) else f"{float(v):.{digits}f}"
    return str(v)


# ---------------------------------------------------------------------------------------------
# Markdown


def markdown_table(table: Table) -> str:
    head = "| " + " | ".join(table.columns) + " |"
    sep = "|" + "---|" * table.keys + "---:|" * (len(table.columns) - table.keys)
    body = ["| " + " | ".join(cell(v, table.digits) for v in row) + " |" for row in table.rows]
    return "\n".join([head, sep, *body])


def _markdown_section(section: Section) -> list[str]:
    parts = [f"## {section.title}", ""]
    if section.table is not None:
        parts += [markdown_table(section.table), ""]
    elif section.empty:
        parts += [section.empty, ""]
    if section.figure is not None:
        parts += [f"![{section.title}]({section.figure.file})", "", f"*{section.figure.caption}*", ""]
    return parts


def markdown(doc: Document) -> str:
    """The evaluation report as a Markdown file (report.md beside its figures)."""
    parts = [f"# {doc.title}", "", *[f"- {n}" for n in doc.notes], "", doc.conventions, ""]
    for section in doc.sections:
        parts += _markdown_section(section)
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# HTML


def html_table(table: Table) -> str:
    """A table in a horizontally scrolling box, so a wide one never overflows the page."""
    def row(cells: list, tag: str) -> str:
        out = []
        for k, v in enumerate(cells):
            content = text(v if tag == "th" else cell(v, table.digits))
            out.append(f"<{tag} class='key'>{content}</{tag}>" if k < table.keys else f"<{tag}>{content}</{tag}>")
        return "<tr>" + "".join(out) + "</tr>"

    body = "".join(row(r, "td") for r in table.rows)
    return f"<div class='scroll'><table><thead>{row(table.columns, 'th')}</thead><tbody>{body}</tbody></table></div>"


def html_figure(src: str, caption: str, alt: str | None = None) -> str:
    """An image with its caption; `src` a URL (e.g. a data: URL of an embedded PNG)."""
    alt = caption if alt is None else alt
    return (f"<figure><img alt='{html.escape(alt, quote=True)}' src='{src}'>"
            f"<figcaption>{text(caption)}</figcaption></figure>")


def html_notes(notes: list[str]) -> str:
    return "<ul class='note'>" + "".join(f"<li>{text(n)}</li>" for n in notes) + "</ul>" if notes else ""


def html_document(doc: Document, heading: Callable[[int, str, str], str], image_src: Callable[[str], str],
                  level: int = 3) -> str:
    """The evaluation report as part of a page, without its title (the page gives the section's).

    `heading(level, title, id)` writes a heading (the page numbers them for its contents list);
    `image_src(file)` turns a figure's file name into the URL to embed.
    """
    parts = [html_notes(doc.notes), f"<p>{text(doc.conventions)}</p>"]
    for section in doc.sections:
        parts.append(heading(level, section.title, f"evaluation-{section.id}"))
        if section.table is not None:
            parts.append(html_table(section.table))
        elif section.empty:
            parts.append(f"<p>{text(section.empty)}</p>")
        if section.figure is not None:
            parts.append(html_figure(image_src(section.figure.file), section.figure.caption, section.title))
    return "".join(parts)
