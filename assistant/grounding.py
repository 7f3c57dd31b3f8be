"""A deterministic grounding check: is each claim in the answer supported by a cited source?

Claims are sentences; a claim is supported when most of its content words (and every number)
occur in the sources it could draw on. Crude next to a judge model, but free, fast, and
transparent: staff see exactly which sentence had no support.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

WORD = re.compile(r"[^\W_]+", re.UNICODE)
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
# "[1]", "[1, 2]", "[Source 3]": the marks models put in answers; not part of what a sentence claims.
CITATION_MARK = re.compile(r"\[(?:sources?\s*)?\d+(?:\s*[,;]\s*(?:sources?\s*)?\d+)*\]", re.IGNORECASE)
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
SUPPORT_THRESHOLD = 0.6


def _stem(word: str) -> str:
    """A crude stem, the same for a word's common forms: "submitted", "submits", "submit"."""
    if len(word) > 5 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    # Without these, "reimbursed" would not match "reimburse", nor "submitted" "submit".
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 4 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]
    return word


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in (m.lower() for m in WORD.findall(text)) if w not in STOPWORDS and len(w) > 2}


@dataclass(frozen=True)
class Claim:
    text: str
    support: float
    supported: bool
    missing: list[str]


@dataclass(frozen=True)
class Grounding:
    grounded: bool
    score: float  # share of claims supported
    claims: list[Claim]
    method: str = "lexical"

    def as_json(self) -> dict[str, object]:
        return {
            "grounded": self.grounded,
            "score": round(self.score, 3),
            "method": self.method,
            "claims": [asdict(c) for c in self.claims],
        }


def cited_numbers(answer: str) -> list[int]:
    """Source numbers cited inline in `answer`, in order of first appearance."""
    numbers = (int(n) for mark in CITATION_MARK.findall(answer) for n in re.findall(r"\d+", mark))
    return list(dict.fromkeys(numbers))


def split_claims(answer: str) -> list[str]:
    text = CITATION_MARK.sub("", answer).strip()
    parts = [p.strip() for p in SENTENCE.split(text) if p.strip()]
    # Fragments with fewer than three content words ("Yes.", "In short:") assert nothing checkable.
    return [p for p in parts if len(content_words(p)) >= 3]


def check(answer: str, sources: list[str]) -> Grounding:
    """Grounding of `answer` against the texts of the sources it cited.

    Short fragments are skipped beside real claims, but an answer made only of fragments
    ("The CEO is the CEO.") is checked as a whole: otherwise it would pass for having nothing
    to check. An answer with no content words at all ("Yes.") has no claims.
    """
    claims = split_claims(answer)
    if not claims:
        whole = " ".join(CITATION_MARK.sub("", answer).split())
        claims = [whole] if content_words(whole) else []
    if not sources:
        return Grounding(grounded=False, score=0.0, claims=[Claim(c, 0.0, False, []) for c in claims])
    vocabulary: set[str] = set()
    numbers: set[str] = set()
    for source in sources:
        vocabulary |= content_words(source)
        numbers |= set(NUMBER.findall(source))
    checked = []
    for claim in claims:
        words = content_words(claim)
        missing = sorted(w for w in words if w not in vocabulary)
        missing_numbers = [n for n in NUMBER.findall(claim) if n not in numbers]
        support = 1 - len(missing) / len(words) if words else 1.0
        supported = support >= SUPPORT_THRESHOLD and not missing_numbers
        checked.append(Claim(claim, round(support, 3), supported, missing + missing_numbers))
    score = sum(c.supported for c in checked) / len(checked) if checked else 1.0
    return Grounding(grounded=all(c.supported for c in checked), score=score, claims=checked)


# --- quotes ----------------------------------------------------------------------------------

SOURCE_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)", re.MULTILINE)
QUOTE_CHARS = 600


def claims_citing(answer: str, number: int) -> list[str]:
    """The sentences of `answer` that cite source `number`; all of them when none cites any source."""
    sentences = [p.strip() for p in SENTENCE.split(answer.strip()) if p.strip()]

    def bare(sentence: str) -> str:
        return re.sub(r"\s+([.!?,;:])", r"\1", CITATION_MARK.sub("", sentence)).strip()

    marked = [s for s in sentences if number in cited_numbers(s)]
    if marked:
        return [bare(s) for s in marked]
    if any(cited_numbers(s) for s in sentences):
        return []  # other sentences cite other sources; nothing here names this one
    return [bare(s) for s in sentences]


def supporting_quote(claims: list[str], source: str, *, limit: int = QUOTE_CHARS) -> str:
    """The sentence(s) of `source` that support `claims`, as an exact substring of `source`.

    Each claim picks the source sentence sharing the most of its content words (and numbers);
    the quote runs from the first to the last picked sentence when that fits in `limit`, else it
    is the best one. Without any overlap, the start of the source.
    """
    spans = [(m.start(), m.end()) for m in SOURCE_SENTENCE.finditer(source) if WORD.search(m.group(0))]
    words = [content_words(source[a:b]) | set(NUMBER.findall(source[a:b])) for a, b in spans]
    picked: list[tuple[float, int]] = []
    for claim in claims:
        wanted = content_words(claim) | set(NUMBER.findall(claim))
        if not wanted:
            continue
        scored = [(len(wanted & have) / len(wanted), -i) for i, have in enumerate(words)]
        if scored:
            share, index = max(scored)
            if share >= 0.3:
                picked.append((share, -index))
    if not picked:
        return source[:limit].strip()
    indexes = sorted({i for _, i in picked})
    start, end = spans[indexes[0]][0], spans[indexes[-1]][1]
    if end - start > limit:
        best = max(picked)[1]
        start, end = spans[best]
    quote = source[start:end].strip()
    return quote[:limit]
