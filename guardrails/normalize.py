"""Undo the usual evasions before any check looks at a text.

Checks read a normalised text (NFKC, invisible and bidi controls removed, lookalike letters
mapped to Latin inside Latin words) plus extra *views* of it: text hidden by right-to-left
overrides read in display order, ASCII smuggled in Unicode tag characters, base64 segments
that decode to readable text, and letters spaced apart ("i g n o r e"). An attacker gains
nothing by wrapping an instruction: every view goes through the same rules.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass, field

# Invisible characters that split words for a regex but not for a reader or a model.
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e\u034f\u115f\u1160\u3164"
# Bidirectional controls: embeddings, overrides, isolates and marks.
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
RTL_OPENERS = "\u202e\u2067"  # RIGHT-TO-LEFT OVERRIDE, RIGHT-TO-LEFT ISOLATE
BIDI_CLOSERS = "\u202c\u2069"

_STRIP = re.compile(
    f"[{ZERO_WIDTH}{BIDI}\ufe00-\ufe0f\U000e0100-\U000e01ef\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
)
_TAGS = re.compile("[\U000e0000-\U000e007f]+")

# Cyrillic, Greek and other letters that look like Latin ones (Unicode confusables, the common part).
HOMOGLYPHS = {
    # Cyrillic lower case
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ɡ": "g", "ь": "b", "п": "n", "г": "r",
    # Cyrillic upper case
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ї": "I", "Ј": "J", "Ү": "Y",
    "Һ": "H", "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W", "Ӏ": "I",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Others seen in evasions
    "ı": "i", "ȷ": "j", "օ": "o", "ս": "u", "ց": "g", "ɑ": "a", "ʏ": "y", "ᴀ": "a", "ʀ": "r",
}  # fmt: skip
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_LATIN = re.compile(r"[A-Za-z]")
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_SPACED = re.compile(r"(?<!\S)(?:\S ){4,}\S(?!\S)")
_COMBINING_RUN = re.compile(r"([\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]{2,})")

MAX_BASE64_SEGMENTS = 5
MAX_BASE64_CHARS = 20_000


@dataclass(frozen=True)
class Normalized:
    """A text ready for the checks.

    `text` is what is sent on (to a provider, a log, a cache) once personal data is redacted;
    `views` are extra readings of it that the rules check too (decoded or reordered content).
    """

    text: str
    original_length: int
    truncated: bool = False
    changes: tuple[str, ...] = ()
    views: tuple[str, ...] = ()
    decoded: tuple[str, ...] = field(default=())  # base64 segments that decoded to text

    @property
    def all_texts(self) -> tuple[str, ...]:
        return (self.text, *self.views)


def normalize(text: str, *, max_chars: int = 20_000) -> Normalized:
    """Normalise `text` for the checks; only its first `max_chars` characters are read."""
    text = text if isinstance(text, str) else str(text)
    original_length = len(text)
    truncated = original_length > max_chars
    if truncated:
        text = text[:max_chars]
    changes: list[str] = []
    views: list[str] = []

    smuggled = [_tag_to_ascii(m.group(0)) for m in _TAGS.finditer(text)]
    if smuggled:
        changes.append("tag_characters")
        views.extend(s for s in smuggled if s.strip())
        text = _TAGS.sub("", text)

    if any(c in text for c in RTL_OPENERS):
        changes.append("bidi_override")
        views.append(_display_order(text))

    nfkc = unicodedata.normalize("NFKC", text)
    if nfkc != text:
        changes.append("nfkc")
    stripped = _STRIP.sub("", nfkc)
    if stripped != nfkc:
        changes.append("invisible_characters")
    # Stacks of combining marks ("Zalgo" text) hide letters; one mark per letter is real language.
    text = _COMBINING_RUN.sub(lambda m: m.group(1)[0], stripped)

    mapped = map_homoglyphs(text)
    if mapped != text:
        changes.append("homoglyphs")
        text = mapped
    # Words written wholly in lookalikes may be real Cyrillic or Greek: mapped for the checks only.
    aggressive = map_homoglyphs(text, whole_words=True)
    if aggressive != text:
        changes.append("homoglyphs")
        views.append(aggressive)

    views = [map_homoglyphs(_STRIP.sub("", unicodedata.normalize("NFKC", v))) for v in views]

    decoded = decode_base64_segments(text)
    if decoded:
        changes.append("base64")
        views.extend(decoded)

    spaced = _collapse_spaced(text)
    if spaced != text:
        changes.append("spaced_letters")
        views.append(spaced)

    return Normalized(
        text=text,
        original_length=original_length,
        truncated=truncated,
        changes=tuple(dict.fromkeys(changes)),
        views=tuple(v for v in views if v and v != text),
        decoded=tuple(decoded),
    )


def map_homoglyphs(text: str, *, whole_words: bool = False) -> str:
    """Lookalike letters replaced by Latin ones, in words that are meant to be Latin.

    A word mixing Latin and lookalike letters ("іgnоre") is an evasion and is always mapped.
    With `whole_words`, a word written wholly in lookalikes ("ІGNОRЕ") is mapped too when most
    of the text is Latin; that could also be a real Russian word, so it is for checks only.
    """
    if not any(c in HOMOGLYPHS for c in text):
        return text
    letters = [c for c in text if c.isalpha()]
    latin = sum(1 for c in letters if c.isascii())
    mostly_latin = bool(letters) and latin / len(letters) > 0.5

    def fix(match: re.Match[str]) -> str:
        word = match.group(0)
        if not any(c in HOMOGLYPHS for c in word):
            return word
        mixed = bool(_LATIN.search(word))
        if mixed or (whole_words and mostly_latin and all(c in HOMOGLYPHS for c in word)):
            return "".join(HOMOGLYPHS.get(c, c) for c in word)
        return word

    return _WORD.sub(fix, text)


def _tag_to_ascii(run: str) -> str:
    return "".join(chr(ord(c) - 0xE0000) for c in run if 0x20 <= ord(c) - 0xE0000 < 0x7F)


def _display_order(text: str) -> str:
    """The text as a reader sees it: runs after an RTL override or isolate are reversed."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in RTL_OPENERS:
            end = i + 1
            while end < len(text) and text[end] not in BIDI_CLOSERS and text[end] != "\n":
                end += 1
            out.append(text[i + 1 : end][::-1])
            i = end + 1 if end < len(text) and text[end] in BIDI_CLOSERS else end
            continue
        out.append(char)
        i += 1
    return _STRIP.sub("", unicodedata.normalize("NFKC", "".join(out)))


def decode_base64_segments(text: str) -> list[str]:
    """Readable texts hidden in base64 segments (one level of nesting is unwrapped too)."""
    found: list[str] = []
    for match in _BASE64.finditer(text):
        if len(found) >= MAX_BASE64_SEGMENTS:
            break
        decoded = decode_plausible(match.group(0))
        if decoded is None:
            continue
        inner = decode_plausible(decoded.strip()) if _BASE64.fullmatch(decoded.strip()) else None
        found.append(inner or decoded)
    return found


def decode_plausible(segment: str) -> str | None:
    """The decoded text when `segment` is base64 of readable UTF-8, else None."""
    if len(segment) > MAX_BASE64_CHARS:
        segment = segment[:MAX_BASE64_CHARS]
    body = segment.rstrip("=")
    # Plain long words also match the alphabet; real base64 of text mixes case or digits.
    if body.isalpha() and (body.islower() or body.isupper()):
        return None
    if len(body) % 4 == 1:
        return None
    padded = body + "=" * (-len(body) % 4)
    altchars = b"-_" if ("-" in body or "_" in body) else None
    try:
        raw = base64.b64decode(padded, altchars=altchars, validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if len(decoded) < 6:
        return None
    printable = sum(1 for c in decoded if c.isprintable() or c in "\n\t\r")
    letters = sum(1 for c in decoded if c.isalpha())
    words = sum(1 for c in decoded if c.isalnum() or c.isspace())
    if printable / len(decoded) < 0.95 or words / len(decoded) < 0.8 or letters < 3:
        return None
    return decoded


def _collapse_spaced(text: str) -> str:
    """ "i g n o r e  a l l" read as "ignore all": runs of single spaced characters joined."""
    return _SPACED.sub(lambda m: m.group(0).replace(" ", ""), text)
