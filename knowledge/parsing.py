"""Turn uploaded bytes into structured text blocks.

Everything here is pure Python over bytes: no Django, no network, no files on disk. Bad input only
ever raises `ParseError`, whose message can be shown to the person who uploaded the file. This
module holds the types, the detection and decoding, and plain text; each other format has a module
in `knowledge/formats/` built on the helpers here.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

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
    # The format parsers build this module's Block and ParsedDocument, so they are imported here
    # rather than at the top (each also imports its library only when a file of its kind comes).
    from knowledge.formats import html, markdown, pdf, word

    if kind is DocumentKind.PDF:
        return pdf.parse_pdf(data)
    if kind is DocumentKind.DOCX:
        return word.parse_docx(data)
    assert text is not None  # _sniff decodes every textual kind
    if kind is DocumentKind.HTML:
        return html.parse_html(text)
    if kind is DocumentKind.MARKDOWN:
        return markdown.parse_markdown(text, DocumentKind.MARKDOWN)
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


# --- plain text -------------------------------------------------------------------------------


def _parse_plain_text(text: str) -> ParsedDocument:
    items = [
        ("\n".join(line.rstrip() for line in paragraph.split("\n")), (), None)
        for paragraph in _paragraphs(text)
    ]
    return ParsedDocument(kind=DocumentKind.TEXT, title=None, blocks=_blocks(items), page_count=None)
