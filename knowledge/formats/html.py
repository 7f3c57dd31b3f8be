"""Web pages: hidden text and page chrome dropped, the article found by trafilatura (or the body's
blocks when it finds none)."""

from __future__ import annotations

import logging
import re
from typing import Any

from knowledge.parsing import (
    UNREADABLE_HTML,
    Block,
    DocumentKind,
    ParsedDocument,
    ParseError,
    _blocks,
    _clean_inline,
    _HeadingStack,
    _paragraphs,
)

logger = logging.getLogger(__name__)

# Never content: navigation, scripts and widgets. Page-level <header>/<footer> go too, but not
# those inside an <article> or <main>, which often hold the article's own title or notes.
_HTML_ALWAYS_DROP = ("nav", "script", "style", "noscript", "template", "iframe", "svg", "button")
_HTML_PAGE_CHROME = ("header", "footer")
_HTML_CHROME_ROLES = frozenset({"navigation", "banner", "contentinfo", "search"})
_HTML_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "figcaption",
        "figure", "form", "li", "main", "ol", "p", "pre", "section", "table", "tr", "td", "th",
        "ul", "br", "hr",
    }
)  # fmt: skip
_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_HEAD_REND = re.compile(r"^h([1-6])$")
# Block-level elements of trafilatura's XML; nested ones (paragraphs in a quote) need a break.
_XML_BLOCK_TAGS = frozenset({"p", "head", "list", "item", "table", "row", "quote", "code"})
_HTML_WHITESPACE = re.compile(r"\s+")


def parse_html(markup: str) -> ParsedDocument:
    import lxml.html

    tree = _html_tree(markup)
    if tree is None:
        raise ParseError(UNREADABLE_HTML)
    title = _clean_inline(tree.findtext(".//title") or "") or None
    if title is None:
        first_h1 = tree.find(".//h1")
        if first_h1 is not None:
            title = _clean_inline(first_h1.text_content()) or None
    _drop_page_chrome(tree)
    hidden = drop_hidden(tree)
    blocks = _trafilatura_blocks(lxml.html.tostring(tree, encoding="unicode"))
    if not blocks:
        blocks = _html_body_blocks(tree)
    return ParsedDocument(
        kind=DocumentKind.HTML, title=title, blocks=blocks, page_count=None, notes=_hidden_note(hidden)
    )


# Inline styles that hide an element's text from a reader: not displayed, invisible, transparent,
# or too small to read (the 1px white text of planted instructions).
_HIDDEN_STYLE = re.compile(
    r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse)|opacity\s*:\s*0(?:\.0+)?\s*(?:;|$)"
    r"|font-size\s*:\s*(?:0|0?\.\d+|1)(?:px|pt|em|rem|%)?\s*(?:;|$)"
    r"|(?:height|width|max-height)\s*:\s*0(?:px)?\s*;[^;]*overflow\s*:\s*hidden"
    r"|color\s*:\s*(?:transparent|rgba\([^)]*,\s*0(?:\.0+)?\s*\)))",
    re.IGNORECASE,
)


def drop_hidden(tree: Any) -> int:
    """Remove from the page what a reader never sees: elements with `hidden`, inline styles that
    hide them (see _HIDDEN_STYLE), and comments. Returns how many passages holding text went."""
    import lxml.etree

    doomed = [
        element
        for element in tree.iter()
        if isinstance(element.tag, str)
        and (element.get("hidden") is not None or _HIDDEN_STYLE.search(element.get("style") or ""))
    ]
    comments = list(tree.iter(lxml.etree.Comment))
    counted = sum(1 for element in doomed if element.text_content().strip())
    counted += sum(1 for comment in comments if (comment.text or "").strip())
    for element in [*doomed, *comments]:
        if element.getparent() is not None:
            element.drop_tree() if isinstance(element.tag, str) else _drop_comment(element)
    return counted


def _drop_comment(comment: Any) -> None:
    """Remove a comment node, keeping the text that follows it."""
    parent = comment.getparent()
    tail = comment.tail or ""
    previous = comment.getprevious()
    if previous is not None:
        previous.tail = (previous.tail or "") + tail
    else:
        parent.text = (parent.text or "") + tail
    parent.remove(comment)


def _html_tree(markup: str) -> Any:
    import lxml.html

    # lxml refuses str input that carries an XML encoding declaration.
    markup = re.sub(r"^\s*<\?xml[^>]*>", "", markup)
    try:
        return lxml.html.document_fromstring(markup)
    except Exception:
        return None


def _drop_page_chrome(tree: Any) -> None:
    doomed = list(tree.iter(*_HTML_ALWAYS_DROP))
    doomed += [
        element
        for element in tree.iter(*_HTML_PAGE_CHROME)
        if next(element.iterancestors("article", "main"), None) is None
    ]
    doomed += [
        element
        for element in tree.iter()
        if isinstance(element.tag, str) and element.get("role") in _HTML_CHROME_ROLES
    ]
    for element in doomed:
        if element.getparent() is not None:
            element.drop_tree()  # keeps the element's tail text in its parent


def _trafilatura_blocks(markup: str) -> tuple[Block, ...]:
    """Main content through trafilatura, read from its XML so headings and lists survive."""
    try:
        import trafilatura
    except ImportError:
        # trafilatura 2.x needs lxml_html_clean with lxml >= 5.2; degrade to the body text
        # rather than failing every HTML upload.
        logger.warning("trafilatura unavailable; using the plain HTML body", exc_info=True)
        return ()
    from lxml import etree

    try:
        extracted = trafilatura.extract(
            markup,
            output_format="xml",
            include_tables=True,
            include_formatting=False,
            include_comments=False,
            include_links=False,
            include_images=False,
            favor_recall=True,
            with_metadata=False,
        )
        if not extracted:
            return ()
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        root = etree.fromstring(extracted.encode(), parser=parser)
    except Exception:
        logger.debug("trafilatura failed; falling back to the page body", exc_info=True)
        return ()

    main = root.find("main")
    stack = _HeadingStack()
    items: list[tuple[str, tuple[str, ...], int | None]] = []
    for element in main if main is not None else root:
        tag = element.tag
        if tag == "head":
            match = _HEAD_REND.match(element.get("rend", ""))
            heading = _clean_inline(_xml_text(element).replace("\n", " "))
            if heading:
                stack.push(int(match.group(1)) if match else 2, heading)
        elif tag == "list":
            items.append((_xml_list_text(element), stack.path, None))
        elif tag == "table":
            items.append((_xml_table_text(element), stack.path, None))
        elif tag == "code":
            items.append((_xml_text(element).strip("\n").rstrip(), stack.path, None))
        elif isinstance(tag, str):
            items.append((_clean_lines(_xml_text(element)), stack.path, None))
    return _blocks(items)


def _xml_text(element: Any, skip: frozenset[str] = frozenset()) -> str:
    """Text of an element in document order, <lb/> as a newline, leaving out `skip` subtrees."""
    parts: list[str] = []
    # Explicit stack instead of recursion: nesting depth comes from the uploaded page.
    todo: list[tuple[Any, bool]] = [(element, False)]
    while todo:
        node, is_tail = todo.pop()
        if is_tail:
            parts.append(node.tail or "")
            continue
        if node is not element:
            todo.append((node, True))
        if not isinstance(node.tag, str) or (node is not element and node.tag in skip):
            continue
        if node.tag == "lb" or (node is not element and node.tag in _XML_BLOCK_TAGS):
            parts.append("\n")
        parts.append(node.text or "")
        todo.extend((child, False) for child in reversed(node))
    return "".join(parts)


def _clean_lines(text: str) -> str:
    lines = (_clean_inline(line) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _xml_list_text(element: Any) -> str:
    lines: list[str] = []
    for item in element.iter("item"):
        depth = sum(1 for _ in item.iterancestors("list")) - 1
        text = _clean_inline(_xml_text(item, frozenset({"list"})).replace("\n", " "))
        if text:
            lines.append(f"{'  ' * depth}- {text}")
    return "\n".join(lines)


def _xml_table_text(element: Any) -> str:
    rows: list[str] = []
    for row in element.iter("row"):
        cells = [_clean_inline(_xml_text(cell).replace("\n", " ")) for cell in row.iter("cell")]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _html_body_blocks(tree: Any) -> tuple[Block, ...]:
    """The visible body text, for pages too small for trafilatura to call them content."""
    from lxml import etree

    body = tree.find(".//body")
    root = body if body is not None else tree
    stack = _HeadingStack()
    items: list[tuple[str, tuple[str, ...], int | None]] = []
    parts: list[str] = []
    in_pre = 0
    lists = 0

    def take() -> str:
        text = "".join(parts)
        parts.clear()
        return text

    # iterwalk instead of recursion: hostile pages can nest elements thousands deep.
    for event, element in etree.iterwalk(root, events=("start", "end")):
        tag = element.tag if isinstance(element.tag, str) else ""
        if tag in _HTML_HEADINGS:
            text = take()
            if event == "start":
                items.extend((paragraph, stack.path, None) for paragraph in _paragraphs(text))
            elif heading := _clean_inline(text.replace("\n", " ")):
                stack.push(_HTML_HEADINGS[tag], heading)
        elif tag in {"td", "th"}:
            if event == "start" and element.getprevious() is not None:
                parts.append(" | ")
        elif tag in {"li", "tr", "br"}:
            if event == "start":
                parts.append("\n- " if tag == "li" else "\n")
        elif tag in {"ul", "ol"}:
            # A whole list, nested lists included, stays one block.
            lists += 1 if event == "start" else -1
            if not lists or (event == "start" and lists == 1):
                parts.append("\n\n")
        elif tag in _HTML_BLOCK_TAGS:
            parts.append("\n\n")
        if tag == "pre":
            in_pre += 1 if event == "start" else -1
        # Source whitespace is insignificant in HTML, except inside <pre>.
        content = element.text if event == "start" and tag else None
        if event == "end" and element is not root:
            content = element.tail
        if content:
            parts.append(content if in_pre else _HTML_WHITESPACE.sub(" ", content))
    items.extend((paragraph, stack.path, None) for paragraph in _paragraphs(take()))
    return _blocks((_clean_lines(text), path, page) for text, path, page in items)


def _hidden_note(hidden: int) -> tuple[str, ...]:
    if not hidden:
        return ()
    one = hidden == 1
    return (
        f"{hidden} hidden passage{'' if one else 's'} (not displayed, tiny or transparent text, or "
        f"comments) {'was' if one else 'were'} left out: a reader never sees {'it' if one else 'them'}.",
    )
