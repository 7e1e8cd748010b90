"""One report document, two renderings: Markdown (summary.md) and self-contained HTML (index.html).

The document is a list of blocks built once (study_document.py), so the two files say the same
thing. The HTML embeds every figure as a base64 data URI and carries its CSS inline: it
opens anywhere, mailed or copied out of the project, with no file beside it.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str  # may hold `code` and **bold** spans


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame  # already formatted as display strings


@dataclass(frozen=True)
class FigureBlock:
    file: str  # name under the figures folder
    title: str
    caption: str


Block = Heading | Paragraph | Bullets | Table | FigureBlock

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1b1f24; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 4rem; line-height: 1.5; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
code { background: #f3f4f6; padding: .1rem .3rem; border-radius: 4px; font-size: .92em; }
.table { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85rem; margin: .8rem 0; }
th, td { border: 1px solid #d0d7de; padding: .3rem .55rem; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; }
td:nth-child(-n+4), th:nth-child(-n+4) { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: .92rem; margin-top: .4rem; }
"""


def to_markdown(title: str, blocks: list[Block], figures_link: str) -> str:
    """summary.md: figures are links relative to the Markdown file (`figures_link`/name)."""
    lines = [f"# {title}", ""]
    for previous, block in zip([None, *blocks], blocks, strict=False):
        if isinstance(previous, FigureBlock) and not isinstance(block, FigureBlock):
            lines.append("")  # end the list of figure links
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [*(f"- {item}" for item in block.items), ""]
        elif isinstance(block, Table):
            lines += [*_markdown_table(block.frame), ""]
        elif isinstance(block, FigureBlock):
            lines += [f"- [{block.title}]({figures_link}/{block.file}): {block.caption}"]
    return "\n".join(lines).rstrip() + "\n"


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    def row(values: list[str]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    header = [str(column) for column in frame.columns]
    separator = "| " + " | ".join("---" if i < 4 else "---:" for i in range(len(header))) + " |"
    return [row(header), separator, *(row(list(values)) for values in frame.to_numpy().tolist())]


def to_html(title: str, blocks: list[Block], figures_dir: Path) -> str:
    """index.html: the same blocks, every figure embedded from `figures_dir` with its caption."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{_inline(item)}</li>" for item in block.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            body.append(_html_table(block.frame))
        elif isinstance(block, FigureBlock):
            body.append(_html_figure(block, figures_dir / block.file))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        "<body><main>\n" + "\n".join(body) + "\n</main></body>\n</html>\n"
    )


def _inline(text: str) -> str:
    """Escape HTML, then render the Markdown spans the report uses: `code`, **bold** and
    [links](relative/target)."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(value))}</td>" for value in values) + "</tr>"
        for values in frame.to_numpy().tolist()
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    return f'<div class="table">{table}</div>'


def _html_figure(block: FigureBlock, image: Path) -> str:
    data = base64.b64encode(image.read_bytes()).decode("ascii")
    return (
        f'<figure id="{html.escape(Path(block.file).stem)}">'
        f"<h3>{html.escape(block.title)}</h3>"
        f'<img src="data:image/png;base64,{data}" alt="{html.escape(block.title)}">'
        f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
    )
