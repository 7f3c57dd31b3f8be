"""Evidence: the sentences of the retrieved passages that best answer the question, before any model call.

Right after retrieval every source is cut into units (sentences; lines of lists, tables and code),
the units are ranked by the question's terms they hold (weighted by how rare each term is among
the retrieved text) and, for the best few, by the embedding model (the question in e5's query
mode against the unit in passage mode). The best units are shown at once as "From your
documents", and the best one or two can stand as the answer when the model's own does not hold.

How much to trust the best unit (`Selection.strength`, 0 to 1) and the boundaries between a
strong and a weak selection are calibrated by `bench/evidence.py` on SQuAD 2.0 and DRCD
(docs/benchmarks-answers.md).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from common.text import CJK, NUMBER, URL, Span, content_terms, sentence_spans, terms
from gateway import provider
from guardrails.injection import NEUTRALISED

logger = logging.getLogger(__name__)

MAX_ITEMS = 3  # shown as "From your documents"
ANSWER_CHARS = 300  # an evidence answer: one or two sentences, about this long at most
UNIT_CHARS = 300  # a longer sentence is shown as a window around its best-matching words
EMBED_UNITS = 8  # units embedded per question (the lexical ranking's best): ~25 ms each here
MIN_UNIT_TERMS = 2  # a unit with fewer informative terms ("Steps:") is never evidence on its own
SECOND_SHARE = 0.85  # an evidence answer quotes a second unit scoring at least this share of the first

# How units are ranked: words and the embedding each hold the answer's sentence first about as
# often, together more often (SQuAD 0.71 / 0.72 -> 0.77, DRCD 0.82 / 0.79 -> 0.85; bench/evidence.py,
# docs/benchmarks-answers.md).
LEXICAL_WEIGHT = 1.0
SEMANTIC_WEIGHT = 4.0
# The strength: a logistic model of "the evidence answer holds the answer" over the best unit's
# signals, fitted by bench/evidence.py on half of the SQuAD 2.0 and DRCD articles.
STRENGTH_COEFFICIENTS: dict[str, float] = {
    "bias": -11.224,
    "semantic": 6.224,
    "lexical": -0.176,
    "retrieval": 5.202,
    "margin": 2.743,
}
# Chosen on the held-out half (docs/benchmarks-answers.md). Below WEAK the evidence is only
# related (abstention): there it still holds the answer for 64% of answerable questions, and
# 86-88% of questions the knowledge cannot answer fall below it. At STRONG and above it is shown
# without a warning: at most 5% of answers shown so are wrong (3.9%). Between them it is shown
# with a low-confidence warning. SQuAD 2.0's unanswerable questions, written to look answerable,
# score like answerable ones (AUC 0.42): no cheap signal tells them apart.
STRONG = 0.70
WEAK = 0.30

Level = Literal["strong", "medium", "weak"]
ANSWERING_LEVELS: frozenset[Level] = frozenset({"strong", "medium"})  # evidence may stand as the answer

# A question that asks for a quantity or a time wants a unit with a number in it.
_ASKS_NUMBER = re.compile(
    r"\b(?:how (?:many|much|long|old|far|large|big|often)|when|what (?:year|date|decade|century|percentage)"
    r"|which year)\b|幾|多少|何時|哪一年|什麼時候|什么时候|何年|多久|多長|多长",
    re.IGNORECASE,
)


class SourceLike(Protocol):
    number: int
    chunk_id: int
    document_id: int
    title: str
    filename: str
    text: str
    vector_score: float | None


@dataclass
class Unit:
    """A sentence (or line) of a source, with the scores it earned."""

    source: SourceLike
    span: Span
    terms: set[str]
    lexical: float = 0.0
    semantic: float | None = None

    @property
    def text(self) -> str:
        return self.span.of(self.source.text)

    def score(self) -> float:
        semantic = self.semantic if self.semantic is not None else 0.0
        return LEXICAL_WEIGHT * self.lexical + SEMANTIC_WEIGHT * semantic


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence as shown: the text, where it is in its source, and its score."""

    n: int
    chunk_id: int
    document_id: int
    title: str
    filename: str
    text: str  # the unit, or a window of a long one with "…" where it was cut
    start: int  # offsets of the quoted text inside the chunk's text (for highlighting)
    end: int
    score: float

    def as_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "n": self.n,
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "title": self.title,
            "filename": self.filename,
            "score": round(self.score, 4),
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True)
class Selection:
    items: list[Evidence] = field(default_factory=list)
    strength: float = 0.0  # how likely the best item answers the question, 0..1 (calibrated)
    features: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    embedded: bool = False  # False: the embedding model could not be asked; lexical ranking only

    @property
    def level(self) -> Level:
        if not self.items or self.strength < WEAK:
            return "weak"
        return "strong" if self.strength >= STRONG else "medium"

    def as_json(self) -> dict[str, Any]:
        return {
            "strength": round(self.strength, 4),
            "level": self.level,
            "features": {k: round(v, 4) for k, v in self.features.items()},
            "latency_ms": round(self.latency_ms, 1),
            "embedded": self.embedded,
        }


_TABLE_ROW = re.compile(r"^\|.*\|$")
_TABLE_RULE = re.compile(r"^\|[\s:|-]+\|$")


def units_of(sources: Sequence[SourceLike]) -> list[Unit]:
    """Every unit of every source that says something (two informative terms or more).

    A table's header row is not a unit; its terms go with each row below it, so "what does the
    team plan cost per month" finds the row "| team | 12 euros |" under "| plan | price per month |".
    """
    units = []
    for source in sources:
        spans = sentence_spans(source.text)
        header: set[str] = set()
        for i, span in enumerate(spans):
            line = span.of(source.text)
            if NEUTRALISED in line:
                continue  # where an instruction to an AI was cut out: nothing to quote
            # A web address says nothing on its own: its words do not count towards the unit's terms.
            found = content_terms(URL.sub(" ", line))
            if _TABLE_ROW.match(line):
                following = spans[i + 1].of(source.text) if i + 1 < len(spans) else ""
                if _TABLE_RULE.match(following):
                    header = found
                    continue
                found = found | header
            else:
                header = set()
            if len(found) >= MIN_UNIT_TERMS:
                units.append(Unit(source=source, span=span, terms=found))
    return units


def _idf(question_terms: Sequence[str], units: Sequence[Unit]) -> dict[str, float]:
    """How rare each question term is among the retrieved units (BM25's idf, never negative)."""
    count = len(units)
    frequency = Counter(t for unit in units for t in unit.terms if t in question_terms)
    return {t: math.log(1 + (count - frequency[t] + 0.5) / (frequency[t] + 0.5)) for t in question_terms}


def rank_lexically(question: str, units: list[Unit]) -> float:
    """Score every unit by the share of the question's weighted terms it holds; returns the
    share of the question's weight found anywhere in the retrieved text (its coverage)."""
    wanted = list(dict.fromkeys(t for t in terms(question) if t in content_terms(question)))
    if not wanted or not units:
        return 0.0
    idf = _idf(wanted, units)
    total = sum(idf.values()) or 1.0
    numeric = _ASKS_NUMBER.search(question) is not None
    anywhere: set[str] = set()
    for unit in units:
        held = unit.terms.intersection(wanted)
        anywhere |= held
        unit.lexical = sum(idf[t] for t in held) / total
        if numeric and NUMBER.search(unit.text):
            unit.lexical += 0.1
    return sum(idf[t] for t in anywhere) / total


# The same chunks come back question after question: their sentences' vectors are kept per
# process (about 1.5 kB each), so a sentence is embedded once, not once per question.
_UNIT_VECTORS: OrderedDict[str, list[float]] = OrderedDict()
UNIT_VECTOR_CACHE = 8192


def _unit_vectors(texts: Sequence[str]) -> list[list[float]]:
    missing = [t for t in dict.fromkeys(texts) if t not in _UNIT_VECTORS]
    if missing:
        for text, vector in zip(missing, provider.embed(missing, kind="passage").vectors, strict=True):
            _UNIT_VECTORS[text] = vector
        while len(_UNIT_VECTORS) > UNIT_VECTOR_CACHE:
            _UNIT_VECTORS.popitem(last=False)
    for text in texts:
        _UNIT_VECTORS.move_to_end(text)
    return [_UNIT_VECTORS[t] for t in texts]


def _embed_units(question_vector: Sequence[float], units: Sequence[Unit]) -> bool:
    if not units:
        return True
    try:
        vectors = _unit_vectors([u.text for u in units])
    except provider.ProviderError as exc:
        logger.warning("evidence ranked by words only: %s", exc)
        return False
    for unit, vector in zip(units, vectors, strict=True):
        unit.semantic = sum(float(a) * float(b) for a, b in zip(question_vector, vector, strict=True))
    return True


def select(
    question: str,
    sources: Sequence[SourceLike],
    *,
    query_vector: Sequence[float] | None,
    embed: bool = True,
) -> Selection:
    """The best evidence for `question` among `sources`, best first, with its strength."""
    started = time.perf_counter()
    units = units_of(sources)
    rank_lexically(question, units)
    if not units:
        return Selection(latency_ms=(time.perf_counter() - started) * 1000)
    by_words = sorted(units, key=lambda u: (-u.lexical, u.source.number, u.span.start))
    shortlist = by_words[:EMBED_UNITS]
    embedded = False
    if embed and query_vector is not None:
        embedded = _embed_units(query_vector, shortlist)
    ranked = sorted(shortlist, key=lambda u: (-u.score(), u.source.number, u.span.start))
    best = ranked[0]
    question_terms = content_terms(question)
    features = {
        "semantic": best.semantic if best.semantic is not None else 0.0,
        "lexical": best.lexical,
        "retrieval": best.source.vector_score or 0.0,
        "margin": best.score() - ranked[1].score() if len(ranked) > 1 else best.score(),
    }
    strength = _strength(features) if embedded else 0.0
    items = _items(ranked, question_terms)
    return Selection(
        items=items,
        strength=strength,
        features=features,
        latency_ms=(time.perf_counter() - started) * 1000,
        embedded=embedded,
    )


def _strength(features: dict[str, float]) -> float:
    z = STRENGTH_COEFFICIENTS["bias"] + sum(
        STRENGTH_COEFFICIENTS.get(name, 0.0) * value for name, value in features.items()
    )
    return 1 / (1 + math.exp(-max(-50.0, min(50.0, z))))


def _items(ranked: Sequence[Unit], question_terms: set[str]) -> list[Evidence]:
    items: list[Evidence] = []
    seen: set[str] = set()
    for unit in ranked:
        key = " ".join(unit.text.split()).lower()
        if key in seen:
            continue  # the same sentence in two versions of a document, or quoted twice
        seen.add(key)
        start, end = window(unit.source.text, unit.span, question_terms, UNIT_CHARS)
        items.append(
            Evidence(
                n=unit.source.number,
                chunk_id=unit.source.chunk_id,
                document_id=unit.source.document_id,
                title=unit.source.title,
                filename=unit.source.filename,
                text=_shown(unit.source.text, unit.span, start, end),
                start=start,
                end=end,
                score=unit.score(),
            )
        )
        if len(items) == MAX_ITEMS:
            break
    return items


def window(text: str, span: Span, wanted: set[str], limit: int) -> tuple[int, int]:
    """Offsets of at most `limit` characters of `span` in `text`, around the question's words.

    A unit that fits is returned whole. A longer one (a legal sentence, a table row, a run of
    code) is cut to the stretch holding the most of the question's terms, at word boundaries
    (at any character for Chinese and Japanese).
    """
    if span.end - span.start <= limit:
        return span.start, span.end
    hits = [
        m.start()
        for m in re.finditer(r"[^\W_]+", text[span.start : span.end])
        if content_terms(m.group(0)) & wanted
    ]
    best_start = 0
    if hits:
        best_count = -1
        for first in hits:
            count = sum(1 for h in hits if first <= h < first + limit)
            if count > best_count:
                best_start, best_count = first, count
        # Some context before the first matching word, if there is room.
        best_start = max(0, best_start - limit // 6)
    start = span.start + best_start
    end = min(span.end, start + limit)
    if end - start < limit:
        start = max(span.start, end - limit)
    return _snap(text, start, end, span)


def _snap(text: str, start: int, end: int, span: Span) -> tuple[int, int]:
    """Move cut ends to word boundaries (not needed between CJK characters)."""
    if start > span.start and not CJK.match(text[start]):
        space = text.find(" ", start, end)
        if space != -1:
            start = space + 1
    if end < span.end and not CJK.match(text[end - 1]):
        space = text.rfind(" ", start, end)
        if space > start:
            end = space
    return start, end


def _shown(text: str, span: Span, start: int, end: int) -> str:
    shown = " ".join(text[start:end].split())
    if start > span.start:
        shown = "…" + shown
    if end < span.end:
        shown += "…"
    return shown


def answer_parts(selection: Selection, *, limit: int = ANSWER_CHARS) -> list[Evidence]:
    """The items an evidence answer quotes: the best, and the second when it fits and scored nearly
    as well (in document order when both come from one source)."""
    if not selection.items:
        return []
    first = selection.items[0]
    parts = [first]
    if len(selection.items) > 1:
        second = selection.items[1]
        close = second.score >= SECOND_SHARE * first.score
        if close and len(first.text) + len(second.text) + 8 <= limit:
            parts.append(second)
            if second.n == first.n and second.start < first.start:
                parts.reverse()
    return parts


def answer_text(selection: Selection, *, limit: int = ANSWER_CHARS) -> str:
    """The evidence as an answer: its parts, each followed by its citation mark."""
    return " ".join(f"{p.text} [{p.n}]" for p in answer_parts(selection, limit=limit))
