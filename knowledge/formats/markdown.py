"""Markdown: headings, lists, tables and code read with markdown-it; hidden HTML inside dropped."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from knowledge.formats.html import _HIDDEN_STYLE, _hidden_note
from knowledge.parsing import (
    NO_TEXT,
    DocumentKind,
    ParsedDocument,
    ParseError,
    _blocks,
    _clean_inline,
    _HeadingStack,
)

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_MATTER_KEY = re.compile(r"^[\w-]+[ \t]*:")
_TAGS = re.compile(r"<[^>]*>")


def _strip_front_matter(text: str) -> str:
    match = _FRONT_MATTER.match(text)
    if match is None:
        return text
    # Only YAML-looking content: a document may also open with a horizontal rule.
    first = next((line for line in match.group(1).splitlines() if line.strip()), "")
    return text[match.end() :] if _FRONT_MATTER_KEY.match(first) else text


def parse_markdown(text: str, kind: DocumentKind) -> ParsedDocument:
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": True}).enable("table")
    text, hidden = _drop_hidden_markup(text)
    try:
        tokens = parser.parse(_strip_front_matter(text))
    except Exception as exc:  # markdown-it is total on str input, but stay within the contract
        raise ParseError(NO_TEXT) from exc

    stack = _HeadingStack()
    items: list[tuple[str, tuple[str, ...], int | None]] = []
    title: str | None = None
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.type == "heading_open":
            heading = _inline_text(tokens[index + 1])
            if heading:
                level = int(token.tag[1:])
                stack.push(level, heading)
                if level == 1 and title is None:
                    title = heading
            index = _close_index(tokens, index) + 1
        elif token.type in {"bullet_list_open", "ordered_list_open"}:
            end = _close_index(tokens, index)
            items.append((_list_text(tokens[index : end + 1]), stack.path, None))
            index = end + 1
        elif token.type == "table_open":
            end = _close_index(tokens, index)
            items.append((_table_text(tokens[index : end + 1]), stack.path, None))
            index = end + 1
        elif token.type in {"inline", "fence", "code_block", "html_block"}:
            items.append((_leaf_text(token), stack.path, None))
            index += 1
        else:
            index += 1
    return ParsedDocument(
        kind=kind, title=title, blocks=_blocks(items), page_count=None, notes=_hidden_note(hidden)
    )


_MARKUP_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_MARKUP_ELEMENT = re.compile(r"<([a-zA-Z][\w-]*)(\s[^<>]*)?>.*?</\1\s*>", re.DOTALL)


def _drop_hidden_markup(text: str) -> tuple[str, int]:
    """HTML written inside Markdown: comments and elements hidden by `hidden` or their inline style
    (see _HIDDEN_STYLE) are taken out, as for an HTML page. Returns the text and how many went."""
    count = 0

    def comment(match: re.Match[str]) -> str:
        nonlocal count
        count += bool(match.group(0)[4:-3].strip())
        return ""

    def element(match: re.Match[str]) -> str:
        nonlocal count
        attributes = match.group(2) or ""
        style = re.search(r"""style\s*=\s*["']([^"']*)["']""", attributes, re.IGNORECASE)
        if re.search(r"\bhidden\b(?!\s*=\s*[\"']?false)", attributes) or (
            style and _HIDDEN_STYLE.search(style.group(1))
        ):
            count += 1
            return ""
        return match.group(0)

    text = _MARKUP_COMMENT.sub(comment, text)
    return _MARKUP_ELEMENT.sub(element, text), count


def _close_index(tokens: Sequence[Any], open_index: int) -> int:
    """Index of the token closing the one at open_index (tokens nest like brackets)."""
    depth = 0
    for index in range(open_index, len(tokens)):
        depth += tokens[index].nesting
        if depth == 0:
            return index
    return len(tokens) - 1


def _inline_text(token: Any) -> str:
    parts: list[str] = []
    for child in token.children or ():
        if child.type in {"text", "code_inline"}:
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
    return "\n".join(_clean_inline(line) for line in "".join(parts).split("\n")).strip()


def _list_text(tokens: Sequence[Any]) -> str:
    """Render a (possibly nested) list as '- item' lines, one block for the whole list."""
    lines: list[tuple[str, list[str]]] = []
    counters: list[int | None] = []  # per open list: None for bullets, last number for ordered
    open_items: list[int] = []  # index in `lines` of each open list item
    for token in tokens:
        if token.type == "bullet_list_open":
            counters.append(None)
        elif token.type == "ordered_list_open":
            start = token.attrGet("start")
            counters.append(int(start) - 1 if isinstance(start, int | str) else 0)
        elif token.type in {"bullet_list_close", "ordered_list_close"}:
            counters.pop()
        elif token.type == "list_item_open":
            counter = counters[-1] if counters else None
            if counter is None:
                marker = "-"
            else:
                counters[-1] = counter + 1
                marker = f"{counter + 1}."
            lines.append((f"{'  ' * (len(counters) - 1)}{marker} ", []))
            open_items.append(len(lines) - 1)
        elif token.type == "list_item_close":
            open_items.pop()
        elif token.type in {"inline", "fence", "code_block", "html_block"}:
            text = _leaf_text(token)
            if not text:
                continue
            if open_items and open_items[-1] == len(lines) - 1:
                lines[-1][1].append(text)
            else:
                # Text that follows a nested list inside a loose item: keep it, indented.
                lines.append(("  " * len(counters), [text]))
    rendered: list[str] = []
    for prefix, parts in lines:
        if not parts:
            continue
        indent = "\n" + " " * len(prefix)
        rendered.append(prefix + " ".join(parts).replace("\n", indent))
    return "\n".join(line.rstrip() for line in rendered)


def _leaf_text(token: Any) -> str:
    if token.type == "inline":
        return _inline_text(token)
    if token.type == "html_block":
        return _clean_inline(html.unescape(_TAGS.sub(" ", token.content)))
    return str(token.content).strip("\n").rstrip()


def _table_text(tokens: Sequence[Any]) -> str:
    rows: list[str] = []
    cells: list[str] = []
    for token in tokens:
        if token.type == "tr_open":
            cells = []
        elif token.type == "inline":
            cells.append(_inline_text(token))
        elif token.type == "tr_close" and any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
