"""Text helpers shared by every app: sentences with their offsets, the terms two texts share, negation.

What counts as a word must be the same wherever texts are compared (evidence selection, the
grounding check, follow-up detection), and must work for languages written without spaces:
English and other Latin-script words are stemmed with the Snowball stemmer (the same family
PostgreSQL's English configuration uses), and Chinese or Japanese text is cut into overlapping
character pairs, the usual unit for matching text that has no word boundaries.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import sentencex
import snowballstemmer

# Han ideographs (with extension A and compatibility), kana, and Hangul syllables, written as
# escapes that Python's and PostgreSQL's regular expressions read alike (knowledge.selectors
# uses them in SQL; the search index's groundwork_cjk_pairs has the same ranges).
CJK_RANGES = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
CJK = re.compile(rf"[{CJK_RANGES}]")
_CJK_RUN = re.compile(rf"[{CJK_RANGES}]+")
_LATIN_WORD = re.compile(rf"[^\W\d_{CJK_RANGES}]+")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# A web address, without the bracket or quote that often closes it in prose.
URL = re.compile(r"\b(?:https?|ftp)://[^\s<>\"')\]]+", re.IGNORECASE)

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers him his how i if in into is it its itself just me more most my
    no nor not now of off on once only or other our ours out over own same she should so some such
    than that the their theirs them then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours may
    must might shall according source sources answer based provided yes yeah okay sure indeed
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
_stemmer = snowballstemmer.stemmer("english")


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball stem of a lower-cased word: "submitted", "submits", "submit" give "submit"."""
    return str(_stemmer.stemWord(word))


def has_cjk(text: str) -> bool:
    return CJK.search(text) is not None


def _cjk_pairs(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def _tokens(text: str, keep_stopwords: bool) -> list[tuple[str, str]]:
    """(term, the text it was made from) for each term of `text`, in order."""
    out: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        lowered = token.lower()
        if token[0].isdigit():
            out.append((token.replace(",", ""), token))
        elif CJK.match(token):
            out.extend((pair, pair) for pair in _cjk_pairs(token))
        elif keep_stopwords or (len(lowered) > 1 and lowered not in STOPWORDS):
            out.append((stem(lowered), token))
    return out


_TOKEN = re.compile(rf"{NUMBER.pattern}|{_CJK_RUN.pattern}|{_LATIN_WORD.pattern}")


def terms(text: str, *, keep_stopwords: bool = False) -> list[str]:
    """The terms of `text` in order: stems of Latin-script words, character pairs of CJK runs, numbers.

    Stopwords and one-letter words are left out unless `keep_stopwords`. Numbers are kept as
    written without thousands separators ("1,000" is "1000").
    """
    return [term for term, _ in _tokens(text, keep_stopwords)]


def _informative(term: str) -> bool:
    return len(term) > 2 or CJK.match(term) is not None or term[0].isdigit()


def content_terms(text: str) -> set[str]:
    """The distinct informative terms of `text`: stems of words of three letters or more, CJK pairs,
    numbers."""
    return {t for t in terms(text) if _informative(t)}


def content_forms(text: str) -> dict[str, str]:
    """Each content term of `text` with the word it came from, as written ("manag": "Managers")."""
    forms: dict[str, str] = {}
    for term, surface in _tokens(text, keep_stopwords=False):
        if _informative(term):
            forms.setdefault(term, surface)
    return forms


# --- sentences -----------------------------------------------------------------------------------

_BLANK = re.compile(r"\s*")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•·]|\d{1,3}[.)]|\(?[a-z]\)|\(?[ivx]{1,4}\))\s+", re.IGNORECASE)
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$|\t.*\t")
_CODE_LINE = re.compile(r"[{};]\s*$|^\s*(?:def|class|import|from|return|if|for|SELECT|\$)\b")
_INDENTED = re.compile(r"^(?: {4}|\t)")


@dataclass(frozen=True)
class Span:
    """A piece of a text by its character offsets: `text[start:end]`."""

    start: int
    end: int

    def of(self, text: str) -> str:
        return text[self.start : self.end]


def _language(text: str) -> str:
    # sentencex cuts at 。！？ for Chinese and Japanese, and at . ! ? with abbreviations, decimals
    # and URLs kept whole for English; mixed text is split correctly under either.
    return "zh" if has_cjk(text) else "en"


# An indented line is code unless it reads as wrapped prose (licence texts and RFCs indent their
# paragraphs): five words or more and no sign of code in it.
_PROSE_WORD = re.compile(r"[^\W\d_]{2,}")
_CODE_SIGN = re.compile(r"\w\(|[=<>{};$#]")


def _code_line(line: str) -> bool:
    if _CODE_LINE.search(line):
        return True
    prose = len(_PROSE_WORD.findall(line)) >= 5 and not _CODE_SIGN.search(line)
    return bool(_INDENTED.match(line)) and not prose


def _structured(lines: Sequence[str]) -> bool:
    """Lines that are list items, table rows or code, each a unit of its own, not wrapped prose."""
    marked = sum(bool(_LIST_ITEM.match(x) or _TABLE_ROW.search(x) or _code_line(x)) for x in lines)
    return marked >= max(2, (len(lines) + 1) // 2)


def sentence_spans(text: str) -> list[Span]:
    """The sentences of `text` as spans, leading and trailing blanks excluded.

    Prose is cut into sentences (in any language sentencex knows, Chinese and Japanese
    included); hard-wrapped prose stays one sentence across its line breaks. A block of list
    items, table rows or code lines, which have no sentences, becomes one unit per line.
    """
    spans: list[Span] = []
    position = 0
    for segment in sentencex.segment(_language(text), text):
        start = text.find(segment, position) if segment else -1
        if start < 0:
            continue
        position = start + len(segment)
        lines = segment.split("\n")
        if len(lines) > 1 and _structured([x for x in lines if x.strip()]):
            offset = start
            for line in lines:
                _add(spans, text, offset, offset + len(line))
                offset += len(line) + 1
        else:
            _add(spans, text, start, position)
    return spans


def _add(spans: list[Span], text: str, start: int, end: int) -> None:
    piece = text[start:end]
    if not piece.strip():
        return
    lead = len(piece) - len(piece.lstrip())
    trail = len(piece) - len(piece.rstrip())
    spans.append(Span(start + lead, end - trail))


def sentences(text: str) -> list[str]:
    return [span.of(text) for span in sentence_spans(text)]


# --- negation ----------------------------------------------------------------------------------

# "without" is left out: "with or without modifications" negates nothing the sentence asserts.
_NEGATION_EN = re.compile(r"\b(?:not|no|never|none|nothing|neither|nor|cannot|nobody|nowhere)\b|n't\b", re.I)
# Compounds that hold a negation character without negating ("different", "but", "many",
# "future", "Africa", "very", "wireless", "others") and a double negation that affirms ("must").
_CJK_NOT_NEGATING = re.compile(
    "不同|不過|不过|不斷|不断|不少|不久|不僅|不仅|不但|不管|不論|不论|不得不|不錯|不错|不如|不禁|"
    "無論|无论|非常|非洲|未來|未来|無線|无线|別人|别人|别的|別的|莫非"
)
_NEGATION_CJK = re.compile("[不沒没無无非未勿別别禁否]+|ない|ません")
# "No, ..." or "Yes, ..." opening a reply answers the question; it negates nothing in the sentence.
_REPLY = re.compile(r"^\W*(?:yes|no)\b[\s,.!:;-]*", re.IGNORECASE)
NEGATION_SCOPE_WORDS = 3  # words after "not" that it negates ("may not distribute copies")
NEGATION_SCOPE_CHARS = 3  # characters after 不 that it negates (不得散布: 散布)


def negated_terms(text: str) -> set[str]:
    """The content terms of `text` that a negation governs: those shortly after "not", "never", 不, 沒有…

    A crude scope, but enough to tell "you may not distribute copies" from "you may distribute
    copies", and 不得散布 from 得散布, without a parser.
    """
    reply = _REPLY.match(text)
    begin = reply.end() if reply else 0
    masked = _CJK_NOT_NEGATING.sub(lambda m: " " * len(m.group(0)), text)
    ends = [m.end() for m in _NEGATION_EN.finditer(masked, begin)]
    cjk_ends = [m.end() for m in _NEGATION_CJK.finditer(masked, begin)] if has_cjk(text) else []
    if not ends and not cjk_ends:
        return set()
    out: set[str] = set()
    tokens = list(_TOKEN.finditer(text))
    for end in ends:
        following = [t for t in tokens if t.start() >= end][:NEGATION_SCOPE_WORDS]
        for token in following:
            out |= {term for term, _ in _tokens(token.group(0), keep_stopwords=False) if _informative(term)}
    for end in cjk_ends:
        for token in tokens:
            run = token.group(0)
            if not CJK.match(run) or token.end() <= end:
                continue
            offset = max(0, end - token.start())
            out |= set(_cjk_pairs(run[offset : offset + NEGATION_SCOPE_CHARS + 1]))
            break
    return out


def polarity_differs(claim: str, source: str) -> bool:
    """Whether one text negates what the other asserts: exactly one of them negates a term both hold."""
    shared = content_terms(claim) & content_terms(source)
    return bool(negated_terms(claim) & shared) != bool(negated_terms(source) & shared)


# --- vectors ----------------------------------------------------------------------------------


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0 when either is all zeros)."""
    dot = math.fsum(float(x) * float(y) for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(float(x) ** 2 for x in a)) * math.sqrt(math.fsum(float(y) ** 2 for y in b))
    return dot / norm if norm else 0.0


# --- follow-ups -------------------------------------------------------------------------------

FOLLOW_UP_MAX_TERMS = 3  # a question with this many content terms or fewer leans on the one before


def is_follow_up(question: str, history: Sequence[tuple[str, str]]) -> bool:
    """A short question after another ("and for GPL?") that needs the one before it to be understood."""
    return bool(history) and len(content_terms(question)) <= FOLLOW_UP_MAX_TERMS


def search_text(question: str, history: Sequence[tuple[str, str]]) -> str:
    """What is searched for (and embedded) for `question`: a follow-up together with the previous
    question, anything else as it stands. Retrieval and the answer cache both use this rule."""
    return f"{history[-1][0]} {question}" if is_follow_up(question, history) else question
