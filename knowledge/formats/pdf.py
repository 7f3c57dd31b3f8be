"""PDF: text by page with pypdf, paragraphs rejoined across line breaks, bookmarks as headings."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

from knowledge.parsing import (
    _PDF_MAGIC,
    DAMAGED_PDF,
    PROTECTED_PDF,
    SCANNED_PDF,
    UNREADABLE_ENCRYPTION,
    DocumentKind,
    ParsedDocument,
    ParseError,
    _blocks,
    _clean_inline,
    _HeadingStack,
)

logger = logging.getLogger(__name__)

_LINE_END_SOFT_HYPHEN = ("\u00ad", "\u00ac")
_SENTENCE_END = (".", "!", "?", ":", ";", "\u2026", '"', "\u201d", ")")
# Guards for malformed outlines: a bookmark tree this large or deep is not worth following.
_OUTLINE_MAX_ITEMS = 5000
_OUTLINE_MAX_DEPTH = 12


def parse_pdf(data: bytes) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    # Drop leading junk so the byte offsets in the cross-reference table line up again.
    data = data[data.find(_PDF_MAGIC) :]
    # pypdf raises a wide, undocumented range of exceptions on malformed files; the promise of
    # this module is that bad input only ever surfaces as ParseError.
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(PROTECTED_PDF)
        page_count = len(reader.pages)
    except ParseError:
        raise
    except DependencyError as exc:
        raise ParseError(UNREADABLE_ENCRYPTION) from exc
    except Exception as exc:
        raise ParseError(DAMAGED_PDF) from exc
    if page_count == 0:
        raise ParseError(DAMAGED_PDF)

    page_texts: list[str] = []
    failures = 0
    for page in reader.pages:
        try:
            page_texts.append(page.extract_text() or "")
        except Exception:
            logger.debug("PDF page text extraction failed", exc_info=True)
            failures += 1
            page_texts.append("")
    if failures == page_count:
        raise ParseError(DAMAGED_PDF)
    if not any(text.strip() for text in page_texts):
        raise ParseError(SCANNED_PDF)

    bookmarks = _pdf_bookmarks(reader)
    stack = _HeadingStack()
    items: list[tuple[str, tuple[str, ...], int | None]] = []
    for index, page_text in enumerate(page_texts):
        lines = [_clean_inline(line) for line in page_text.splitlines()]
        folded = {line.casefold() for line in lines if line}
        # A bookmark points at a page, not a line. When its title is a line of the page, the
        # heading starts there (and the line leaves the text, as headings live in heading_path);
        # otherwise it starts at the top of the page.
        on_page: dict[str, tuple[int, str]] = {}
        for depth, title in bookmarks.get(index, []):
            if title.casefold() in folded:
                on_page[title.casefold()] = (depth, title)
            else:
                stack.push(depth, title)
        current: list[str] = []
        for line in [*lines, ""]:
            heading = on_page.pop(line.casefold(), None) if line else None
            if line and heading is None:
                current.append(line)
                continue
            items.extend((paragraph, stack.path, index + 1) for paragraph in _pdf_paragraphs(current))
            current = []
            if heading is not None:
                stack.push(*heading)

    return ParsedDocument(
        kind=DocumentKind.PDF,
        title=_pdf_title(reader),
        blocks=_blocks(items),
        page_count=page_count,
    )


def _pdf_title(reader: Any) -> str | None:
    try:
        metadata = reader.metadata
        title = metadata.title if metadata is not None else None
    except Exception:
        return None
    if not isinstance(title, str):
        return None
    return _clean_inline(title) or None


def _pdf_bookmarks(reader: Any) -> dict[int, list[tuple[int, str]]]:
    """Map 0-based page index to the (depth, title) bookmarks that point at it, in order."""
    found: dict[int, list[tuple[int, str]]] = {}
    try:
        outline = reader.outline
    except Exception:
        return found
    # Iterative walk with a budget: outlines in hostile files can be huge or deeply nested.
    stack: list[tuple[Iterator[Any], int]] = [(iter(outline), 1)]
    seen = 0
    while stack and seen < _OUTLINE_MAX_ITEMS:
        items, depth = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        seen += 1
        if isinstance(item, list):
            if depth < _OUTLINE_MAX_DEPTH:
                stack.append((iter(item), depth + 1))
            continue
        try:
            page_index = reader.get_destination_page_number(item)
            title = _clean_inline(str(item.title or ""))
        except Exception:
            logger.debug("Skipping an unreadable PDF bookmark", exc_info=True)
            continue
        if isinstance(page_index, int) and page_index >= 0 and title:
            found.setdefault(page_index, []).append((depth, title))
    return found


def _pdf_paragraphs(lines: list[str]) -> list[str]:
    """Rebuild paragraphs from consecutive PDF text lines, broken wherever the layout did."""
    if not lines:
        return []
    # pypdf rarely emits blank lines between paragraphs; a line that ends a sentence well short
    # of the text width is the usual sign that a paragraph ended there.
    width = max(len(line) for line in lines)
    paragraphs: list[str] = []
    current = lines[0]
    for previous, line in zip(lines, lines[1:], strict=False):
        if previous.endswith(_SENTENCE_END) and len(previous) < 0.7 * width:
            paragraphs.append(current)
            current = line
        else:
            current = _join_pdf_lines(current, line)
    paragraphs.append(current)
    return paragraphs


def _join_pdf_lines(left: str, right: str) -> str:
    if left.endswith(_LINE_END_SOFT_HYPHEN):
        return left[:-1] + right
    # A hard hyphen at a line end may be a broken word ("infor-" "mation") or a real compound
    # ("well-" "known"). Without a dictionary we cannot tell, so keep the hyphen and drop the
    # space: nothing is invented and nothing is lost.
    if left.endswith("-") and len(left) > 1 and left[-2].isalpha() and right[:1].islower():
        return left + right
    return f"{left} {right}"
