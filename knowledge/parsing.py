"""Turn uploaded bytes into structured text blocks.

Everything here is pure Python over bytes: no Django, no network, no files on disk. Bad input only
ever raises `ParseError`, whose message can be shown to the person who uploaded the file.
"""

from __future__ import annotations

import html
import io
import logging
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

logger = logging.getLogger(__name__)


class ParseError(Exception):
    """A file we cannot read; `str(exc)` is a sentence a non-technical person understands."""


class DocumentKind(StrEnum):
    PDF = "pdf"
    DOCX = "docx"
    HTML = "html"
    MARKDOWN = "markdown"
    TEXT = "text"


@dataclass(frozen=True)
class Block:
    """One structural unit of text (paragraph, list, table, code block)."""

    text: str
    heading_path: tuple[str, ...] = ()
    page: int | None = None

    def __post_init__(self) -> None:
        # Chunking relies on blocks carrying text; an empty block is a parser bug, not bad input.
        if not self.text.strip():
            raise ValueError("Block.text must contain non-whitespace text")


@dataclass(frozen=True)
class ParsedDocument:
    kind: DocumentKind
    title: str | None
    blocks: tuple[Block, ...]
    page_count: int | None = None
    # What was left out or repaired, in words a person understands ("3 hidden passages of the page
    # were left out"); shown with the document.
    notes: tuple[str, ...] = ()


UNREADABLE = "This file could not be read; it may be damaged."
EMPTY_FILE = "The file is empty."
NO_TEXT = "The file contains no readable text."
UNSUPPORTED = (
    "This file type is not supported; upload a PDF, Word (.docx), HTML, Markdown or plain text file."
)
DAMAGED_PDF = "This PDF is damaged or not a valid PDF; try exporting it again."
PROTECTED_PDF = "This PDF is password-protected; upload an unprotected copy."
UNREADABLE_ENCRYPTION = "This PDF uses an encryption method we cannot open; upload an unprotected copy."
SCANNED_PDF = (
    "This PDF has no text layer (it looks like a scanned image), and text recognition (OCR) "
    "is not supported; upload a PDF with selectable text."
)
DAMAGED_DOCX = "This Word document is damaged or not a valid .docx file; try saving it again."
TOO_LARGE_DOCX = "This Word document is too large to read; split it into smaller files."
UNREADABLE_HTML = "This web page could not be read."

_PDF_MAGIC = b"%PDF-"
# Real PDFs sometimes carry a few bytes of junk (mail headers, a BOM) before the header; readers
# such as Acrobat accept the header anywhere in the first kilobyte.
_PDF_MAGIC_WINDOW = 1024
_DOCX_MAX_UNCOMPRESSED = 256 * 1024 * 1024
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")

_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with the UTF-16 LE one.
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)

_LINE_BREAK_CONTROLS = re.compile("[\x0b\x0c\x85\u2028\u2029]")
_CONTROL_CHARS = re.compile("[\x00-\x08\x0e-\x1f\x7f\ufffe\uffff]")
_C1_CONTROLS = re.compile("[\x80-\x84\x86-\x9f]")  # U+0085 is a line break, handled above
_MARKDOWN_EXTENSIONS = frozenset({".md", ".markdown", ".mdown", ".mkd", ".mkdn"})
_TEXT_EXTENSIONS = frozenset({".txt", ".text", ".log", ".csv", ".tsv", ".rst"})
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+\S", re.MULTILINE)
_HTML_STRONG = re.compile(r"<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>]", re.IGNORECASE)
_HTML_TAG = re.compile(
    r"<(p|div|span|a|h[1-6]|ul|ol|li|table|tr|td|br|img|meta|title|section|article)[\s>/]",
    re.IGNORECASE,
)


def detect_kind(data: bytes, filename: str = "") -> DocumentKind:
    """Say what kind of document `data` holds, judging by content rather than by the name.

    The filename's extension only decides between Markdown and plain text. Raises ParseError for
    empty input, archives that are not Word documents and binary data.
    """
    kind, _ = _sniff(data, filename)
    return kind


def decode_text(data: bytes) -> str:
    """Decode text of unknown encoding to str, with newlines normalised to `\\n` and NULs removed.

    Byte order marks win; then strict UTF-8; then charset-normalizer's best guess. Raises
    ParseError when the bytes do not look like text at all.
    """
    if not data:
        return ""
    text, certain = _decode(data)
    # Valid UTF-8 (or a byte order mark) is text, whatever characters it holds; only a guessed
    # code page that comes out full of control characters means the bytes were never text.
    if not certain and _looks_binary(text):
        raise ParseError(UNSUPPORTED)
    text = repair_mojibake(text.replace("\r\n", "\n").replace("\r", "\n"))
    # Stray control characters carry no text, and lxml rejects them outright.
    return _CONTROL_CHARS.sub("", _LINE_BREAK_CONTROLS.sub("\n", text))


def repair_mojibake(text: str) -> str:
    """Text decoded in the wrong encoding somewhere upstream, put right: "itâ\x80\x99s" is "it’s".

    ftfy undoes such double decodings and leaves correct text alone (no change on 1,646 SQuAD and
    DRCD paragraphs). Widths and quotes are kept as written: Chinese full-width punctuation stays.
    C1 control characters left over carry no text and are dropped.
    """
    import ftfy

    fixed = ftfy.fix_text(
        text, fix_character_width=False, uncurl_quotes=False, unescape_html=False, normalization="NFC"
    )
    return _C1_CONTROLS.sub("", fixed)


def parse_document(data: bytes, filename: str = "") -> ParsedDocument:
    """Parse an uploaded file into titled, heading-aware text blocks.

    Raises ParseError, and only ParseError, for anything we cannot read.
    """
    kind, text = _sniff(data, filename)
    try:
        parsed = _parse(kind, data, text)
    except ParseError:
        raise
    except Exception as exc:
        # Parsers map the failures they know; this keeps the promise for the ones they don't.
        logger.exception("Unexpected failure parsing a %s document", kind)
        raise ParseError(UNREADABLE) from exc
    if not parsed.blocks:
        raise ParseError(NO_TEXT)
    return parsed


def _parse(kind: DocumentKind, data: bytes, text: str | None) -> ParsedDocument:
    if kind is DocumentKind.PDF:
        return _parse_pdf(data)
    if kind is DocumentKind.DOCX:
        return _parse_docx(data)
    assert text is not None  # _sniff decodes every textual kind
    if kind is DocumentKind.HTML:
        return _parse_html(text)
    if kind is DocumentKind.MARKDOWN:
        return _parse_markdown(text, DocumentKind.MARKDOWN)
    return _parse_plain_text(text)


# --- detection and decoding ------------------------------------------------------------------


def _sniff(data: bytes, filename: str) -> tuple[DocumentKind, str | None]:
    """Detect the kind, returning the decoded text for textual kinds so it is decoded once."""
    if not data.strip():
        raise ParseError(EMPTY_FILE)
    if _PDF_MAGIC in data[:_PDF_MAGIC_WINDOW]:
        return DocumentKind.PDF, None
    if data.startswith(_ZIP_MAGICS):
        return _sniff_zip(data), None

    text = decode_text(data)
    if not text.strip():
        raise ParseError(EMPTY_FILE)
    if _looks_like_html(text):
        return DocumentKind.HTML, text
    return _markdown_or_text(text, filename), text


def _sniff_zip(data: bytes) -> DocumentKind:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        # Every .docx is a ZIP, so a broken ZIP is most likely a damaged Word document.
        raise ParseError(DAMAGED_DOCX) from exc
    if not any(entry.filename == "word/document.xml" for entry in entries):
        raise ParseError(UNSUPPORTED)
    # zipfile never inflates an entry past its declared size, so the declared sizes bound the
    # memory python-docx can be made to use (a "zip bomb" expands to gigabytes).
    if sum(entry.file_size for entry in entries) > _DOCX_MAX_UNCOMPRESSED:
        raise ParseError(TOO_LARGE_DOCX)
    return DocumentKind.DOCX


def _looks_like_html(text: str) -> bool:
    head = text[:4096].lstrip()
    if _HTML_STRONG.search(head[:1024]):
        return True
    if not head.startswith("<"):
        return False
    tags = {match.group(1).lower() for match in _HTML_TAG.finditer(text[:8192])}
    return len(tags) >= 3


def _markdown_or_text(text: str, filename: str) -> DocumentKind:
    name = filename.lower()
    extension = name[name.rfind(".") :] if "." in name else ""
    if extension in _MARKDOWN_EXTENSIONS:
        return DocumentKind.MARKDOWN
    if extension in _TEXT_EXTENSIONS:
        return DocumentKind.TEXT
    return DocumentKind.MARKDOWN if _ATX_HEADING.search(text) else DocumentKind.TEXT


def _decode(data: bytes) -> tuple[str, bool]:
    """The text, and whether its encoding is certain (a byte order mark, or valid UTF-8)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding), True
            except UnicodeDecodeError as exc:
                raise ParseError(UNSUPPORTED) from exc

    utf16 = _guess_utf16(data)
    if utf16 is not None:
        try:
            return data.decode(utf16), False
        except UnicodeDecodeError:
            pass  # Not UTF-16 after all; the checks below decide.

    if data.count(b"\x00") > max(2, len(data) // 100):
        # 8-bit and UTF-8 text never contains NULs in bulk; executables and images do.
        raise ParseError(UNSUPPORTED)
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        pass
    return _decode_guessed(data), False


def _decode_guessed(data: bytes) -> str:
    import charset_normalizer

    matches = charset_normalizer.from_bytes(data)
    best = matches.best()
    if best is None:
        # A UTF-8 file with a few damaged bytes: keep the text, with the damage marked.
        lenient = data.decode("utf-8", errors="replace")
        if lenient.count("\ufffd") <= len(lenient) // 100:
            return lenient
        raise ParseError(UNSUPPORTED)
    # Short texts often decode equally cleanly in several Western code pages (cp1250, cp1252,
    # cp1257...), and charset-normalizer then picks one arbitrarily. cp1252 is by far the most
    # common of them in uploads, so it wins ties.
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos:
            best = match
            break
    guessed = str(best)
    # On short inputs charset-normalizer sometimes settles on Latin-1, which turns Windows
    # typography (dashes, curly quotes) into invisible C1 controls; cp1252 is the likelier source.
    if any("\x80" <= char <= "\x9f" for char in guessed):
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            pass
    return guessed


def _guess_utf16(data: bytes) -> str | None:
    """Recognise BOM-less UTF-16 by the NUL bytes that mostly-Latin text leaves on one side."""
    sample = data[:4096]
    if len(sample) < 4 or len(sample) % 2:
        return None
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    half = len(sample) // 2
    if odd_nuls > half * 0.3 and even_nuls < half * 0.05:
        return "utf-16-le"
    if even_nuls > half * 0.3 and odd_nuls < half * 0.05:
        return "utf-16-be"
    return None


def _looks_binary(text: str) -> bool:
    sample = text[:8192]
    if not sample:
        return False
    allowed = "\t\n\r\f\v\x00"
    suspicious = sum(
        1 for char in sample if char not in allowed and unicodedata.category(char) in {"Cc", "Cs", "Co", "Cn"}
    )
    return suspicious > max(2, len(sample) // 100)


# --- shared helpers ---------------------------------------------------------------------------

_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n\s*")


def _clean_inline(text: str) -> str:
    """Collapse runs of spaces and trim, for text that came from one line of markup."""
    return _SPACES.sub(" ", text).strip()


def _paragraphs(text: str) -> list[str]:
    return [part.strip() for part in _BLANK_LINES.split(text) if part.strip()]


class _HeadingStack:
    """The enclosing headings at the current point of a document."""

    def __init__(self) -> None:
        self._entries: list[tuple[int, str]] = []

    def push(self, level: int, title: str) -> None:
        while self._entries and self._entries[-1][0] >= level:
            self._entries.pop()
        self._entries.append((level, title))

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(title for _, title in self._entries)


def _blocks(texts: Iterable[tuple[str, tuple[str, ...], int | None]]) -> tuple[Block, ...]:
    return tuple(Block(text, path, page) for text, path, page in texts if text.strip())


# --- PDF --------------------------------------------------------------------------------------

_LINE_END_SOFT_HYPHEN = ("\u00ad", "\u00ac")
_SENTENCE_END = (".", "!", "?", ":", ";", "\u2026", '"', "\u201d", ")")
# Guards for malformed outlines: a bookmark tree this large or deep is not worth following.
_OUTLINE_MAX_ITEMS = 5000
_OUTLINE_MAX_DEPTH = 12


def _parse_pdf(data: bytes) -> ParsedDocument:
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


# --- DOCX -------------------------------------------------------------------------------------

_DOCX_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)
_DOCX_LIST_STYLE = re.compile(r"^list\b", re.IGNORECASE)


def _parse_docx(data: bytes) -> ParsedDocument:
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


# --- HTML -------------------------------------------------------------------------------------

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


def _parse_html(markup: str) -> ParsedDocument:
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


# --- Markdown ---------------------------------------------------------------------------------

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


def _parse_markdown(text: str, kind: DocumentKind) -> ParsedDocument:
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


def _hidden_note(hidden: int) -> tuple[str, ...]:
    if not hidden:
        return ()
    one = hidden == 1
    return (
        f"{hidden} hidden passage{'' if one else 's'} (not displayed, tiny or transparent text, or "
        f"comments) {'was' if one else 'were'} left out: a reader never sees {'it' if one else 'them'}.",
    )


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


# --- plain text -------------------------------------------------------------------------------


def _parse_plain_text(text: str) -> ParsedDocument:
    items = [
        ("\n".join(line.rstrip() for line in paragraph.split("\n")), (), None)
        for paragraph in _paragraphs(text)
    ]
    return ParsedDocument(kind=DocumentKind.TEXT, title=None, blocks=_blocks(items), page_count=None)
