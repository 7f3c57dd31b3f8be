"""Word (.docx): paragraphs, headings by style, lists and tables, read with python-docx."""

from __future__ import annotations

import io
import re
from typing import Any

from knowledge.parsing import (
    DAMAGED_DOCX,
    DocumentKind,
    ParsedDocument,
    ParseError,
    _blocks,
    _clean_inline,
    _HeadingStack,
)

_DOCX_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)
_DOCX_LIST_STYLE = re.compile(r"^list\b", re.IGNORECASE)


def parse_docx(data: bytes) -> ParsedDocument:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    # python-docx and lxml raise many exception types on broken packages; map them all.
    try:
        document = docx.Document(io.BytesIO(data))
        content = list(document.iter_inner_content())
        core_title = document.core_properties.title
    except Exception as exc:
        raise ParseError(DAMAGED_DOCX) from exc

    stack = _HeadingStack()
    items: list[tuple[str, tuple[str, ...], int | None]] = []
    list_items: list[str] = []
    title = _clean_inline(core_title or "") or None
    first_heading: str | None = None

    def flush_list() -> None:
        if list_items:
            items.append(("\n".join(list_items), stack.path, None))
            list_items.clear()

    try:
        for element in content:
            if isinstance(element, Table):
                flush_list()
                items.append((_docx_table_text(element), stack.path, None))
                continue
            if not isinstance(element, Paragraph):
                continue
            text = _clean_inline(element.text.replace("\n", " "))
            if not text:
                continue
            style_name = element.style.name if element.style is not None else ""
            level = _docx_heading_level(style_name or "")
            if level is not None:
                flush_list()
                stack.push(level, text)
                if level == 0 and title is None:
                    title = text
                if level == 1 and first_heading is None:
                    first_heading = text
            elif _docx_is_list(element, style_name or ""):
                list_items.append(f"- {text}")
            else:
                flush_list()
                items.append((text, stack.path, None))
        flush_list()
    except Exception as exc:
        raise ParseError(DAMAGED_DOCX) from exc

    return ParsedDocument(
        kind=DocumentKind.DOCX,
        title=title or first_heading,
        blocks=_blocks(items),
        page_count=None,
    )


def _docx_heading_level(style_name: str) -> int | None:
    if style_name.strip().lower() == "title":
        return 0
    match = _DOCX_HEADING_STYLE.match(style_name.strip())
    return int(match.group(1)) if match else None


def _docx_is_list(paragraph: Any, style_name: str) -> bool:
    if _DOCX_LIST_STYLE.match(style_name):
        return True
    properties = paragraph._p.pPr
    return properties is not None and properties.numPr is not None


def _docx_table_text(table: Any) -> str:
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous: Any = None
        for cell in row.cells:
            # Merged cells come back once per grid column; keep one copy.
            if previous is not None and cell._tc is previous:
                continue
            previous = cell._tc
            cells.append(_clean_inline(cell.text.replace("\n", " ")))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
