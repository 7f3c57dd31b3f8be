"""Safe HTML for model output: Markdown without raw HTML, sanitised, with citation markers as links.

Model text may echo anything a document contains, including markup written to attack the
reader. Markdown is parsed with HTML disabled (tags come out as text) and images disabled (an
image URL would be fetched without a click, leaking data); the result then goes through nh3
with a small allowlist, so even a bug in the parser cannot let a script or handler through.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

import nh3
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")

ALLOWED_TAGS = {
    "a", "p", "br", "strong", "em", "code", "pre", "ul", "ol", "li", "blockquote", "hr", "del", "s",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "span", "sup",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title", "data-cite"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
ALLOWED_CLASSES = {"a": {"cite"}, "sup": {"cites"}}

_cleaner = nh3.Cleaner(
    tags=ALLOWED_TAGS,
    clean_content_tags={"script", "style"},
    attributes=ALLOWED_ATTRIBUTES,
    allowed_classes=ALLOWED_CLASSES,
    url_schemes={"http", "https", "mailto"},
    link_rel="noopener noreferrer nofollow",
)

CiteUrl = Callable[[int], str]


def _citation_rule(state: StateCore) -> None:
    """Turn "[1]" and "[1, 2]" in plain text into links to the cited sources.

    Runs on text tokens only, so markers inside code spans, code blocks and link text stay as
    written. Numbers the answer did not cite stay plain text.
    """
    cite_url: CiteUrl | None = state.env.get("cite_url")
    known: Collection[int] = state.env.get("cite_known", ())
    if cite_url is None:
        return
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        children: list[Token] = []
        in_link = 0
        for token in block.children:
            if token.type == "link_open":
                in_link += 1
            elif token.type == "link_close":
                in_link -= 1
            if token.type != "text" or in_link or not CITATION.search(token.content):
                children.append(token)
                continue
            children.extend(_split_citations(token.content, cite_url, known))
        block.children = children


def _split_citations(text: str, cite_url: CiteUrl, known: Collection[int]) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    for match in CITATION.finditer(text):
        numbers = [int(n) for n in re.split(r"\s*,\s*", match.group(1))]
        if not any(n in known for n in numbers):
            continue
        if match.start() > position:
            tokens.append(_text(text[position : match.start()]))
        links = ", ".join(
            format_html(
                '<a class="cite" href="{}" data-cite="{}" title="Open source {}">{}</a>', cite_url(n), n, n, n
            )
            if n in known
            else str(n)
            for n in numbers
        )
        html = Token("html_inline", "", 0)
        html.content = f'<sup class="cites">[{links}]</sup>'
        tokens.append(html)
        position = match.end()
    if position < len(text):
        tokens.append(_text(text[position:]))
    return tokens


def _text(content: str) -> Token:
    token = Token("text", "", 0)
    token.content = content
    return token


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.disable("image")
    md.core.ruler.push("citations", _citation_rule)
    return md


_markdown = _parser()


def sanitize(html: str) -> SafeString:
    """HTML restricted to the allowlist above; everything else is dropped."""
    return mark_safe(_cleaner.clean(html))  # noqa: S308 (nh3 just removed everything unsafe)


def markdown_html(
    text: str, *, cite_url: CiteUrl | None = None, citations: Sequence[dict[str, Any]] = ()
) -> SafeString:
    """Render model Markdown to safe HTML; citation markers link to `cite_url(n)` for cited n."""
    env = {"cite_url": cite_url, "cite_known": {int(c["n"]) for c in citations if "n" in c}}
    return sanitize(_markdown.render(text or "", env))


def highlight_spans(text: str, spans: Sequence[tuple[int, int, str]]) -> SafeString:
    """`text` escaped, with each (start, end, css class) span wrapped in <mark>; overlaps are merged
    into the earlier span."""
    parts: list[str] = []
    position = 0
    for start, end, css in sorted(spans):
        start = max(start, position)
        if not 0 <= start < end <= len(text):
            continue
        parts.append(escape(text[position:start]))
        parts.append(format_html('<mark class="{}">{}</mark>', css, text[start:end]))
        position = end
    parts.append(escape(text[position:]))
    return mark_safe("".join(str(p) for p in parts))  # noqa: S308 (every part is escaped above)


def locate(
    text: str, quoted: str, start: int | None = None, end: int | None = None
) -> tuple[int, int] | None:
    """Where `quoted` (possibly cut with "…" and with its spaces collapsed) lies in `text`.

    The recorded offsets are tried first; a chunk shown differently (neutralised, re-indexed)
    falls back to a search for the quoted words.
    """
    wanted = " ".join(quoted.strip("…").split())
    if not wanted:
        return None
    if start is not None and end is not None and " ".join(text[start:end].split()) == wanted:
        return start, end
    pattern = r"\s+".join(re.escape(word) for word in wanted.split())
    match = re.search(pattern, text)
    return (match.start(), match.end()) if match else None


def highlight(text: str, passage: str) -> SafeString:
    """`text` escaped, with the first occurrence of `passage` wrapped in <mark>."""
    passage = passage.strip()
    start = text.find(passage) if passage else -1
    if start < 0:
        return escape(text)
    end = start + len(passage)
    return format_html("{}<mark>{}</mark>{}", text[:start], text[start:end], text[end:])
