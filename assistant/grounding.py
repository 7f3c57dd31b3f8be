"""A deterministic grounding check: is each claim in the answer supported by a cited source?

Claims are sentences; a claim is supported when most of its content terms (and every number)
occur in the sources it could draw on, and it does not say the opposite of the source sentence
that matches it best ("may not" against "may"). Terms are Snowball stems for words and character
pairs for Chinese and Japanese (`common.text`), so a Chinese answer is checked phrase by phrase,
not as one long "word". Crude next to a judge model, but free, fast, and transparent: staff see
exactly which sentence had no support.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from common.text import NUMBER, content_forms, content_terms, polarity_differs, sentence_spans, sentences

# "[1]", "[1, 2]", "[Source 3]": the marks models put in answers; not part of what a sentence claims.
CITATION_MARK = re.compile(r"\[(?:sources?\s*)?\d+(?:\s*[,;]\s*(?:sources?\s*)?\d+)*\]", re.IGNORECASE)
WORD = re.compile(r"[^\W_]+")  # a letter or digit: ",, [1]" has none once its mark is gone
SUPPORT_THRESHOLD = 0.6
NEGATION_MISMATCH = "(negation)"  # listed among a claim's missing terms when its polarity differs


def content_words(text: str) -> set[str]:
    """The content terms of `text` (see `common.text.content_terms`)."""
    return content_terms(text)


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


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in NUMBER.findall(text)}


def split_claims(answer: str) -> list[str]:
    text = CITATION_MARK.sub("", answer).strip()
    # Fragments with fewer than three content terms ("Yes.", "In short:") assert nothing checkable.
    return [p for p in sentences(text) if len(content_terms(p)) >= 3]


def _best_sentence(claim_terms: set[str], source_sentences: list[tuple[str, set[str]]]) -> str:
    best, best_overlap = "", 0
    for sentence, have in source_sentences:
        overlap = len(claim_terms & have)
        if overlap > best_overlap:
            best, best_overlap = sentence, overlap
    return best


def check(answer: str, sources: list[str]) -> Grounding:
    """Grounding of `answer` against the texts of the sources it cited.

    Short fragments are skipped beside real claims, but an answer made only of fragments
    ("The CEO is the CEO.") is checked as a whole: otherwise it would pass for having nothing
    to check. An answer with no content terms at all ("Yes.") has no claims. A claim whose
    polarity differs from the source sentence it matches best is unsupported, however many of
    its words that sentence holds.
    """
    claims = split_claims(answer)
    if not claims:
        whole = " ".join(CITATION_MARK.sub("", answer).split())
        claims = [whole] if content_terms(whole) else []
    if not sources:
        return Grounding(grounded=False, score=0.0, claims=[Claim(c, 0.0, False, []) for c in claims])
    vocabulary: set[str] = set()
    numbers: set[str] = set()
    source_sentences: list[tuple[str, set[str]]] = []
    for source in sources:
        vocabulary |= content_terms(source)
        numbers |= _numbers(source)
        source_sentences.extend((s, content_terms(s)) for s in sentences(source))
    checked = []
    for claim in claims:
        forms = content_forms(claim)
        words = set(forms)
        claim_numbers = _numbers(claim)
        # Staff read the words as the answer wrote them, not their stems.
        missing = sorted(forms[w].lower() for w in words if w not in vocabulary and w not in claim_numbers)
        missing_numbers = sorted(n for n in claim_numbers if n not in numbers)
        counted = words - claim_numbers
        support = 1 - len(missing) / len(counted) if counted else 1.0
        supported = support >= SUPPORT_THRESHOLD and not missing_numbers
        best = _best_sentence(words, source_sentences)
        if supported and best and polarity_differs(claim, best):
            supported = False
            missing = [*missing, NEGATION_MISMATCH]
        checked.append(Claim(claim, round(support, 3), supported, missing + missing_numbers))
    score = sum(c.supported for c in checked) / len(checked) if checked else 1.0
    return Grounding(grounded=all(c.supported for c in checked), score=score, claims=checked)


# --- quotes ----------------------------------------------------------------------------------

QUOTE_CHARS = 600


def claims_citing(answer: str, number: int) -> list[str]:
    """The sentences of `answer` that cite source `number`; all of them when none cites any source."""
    parts = sentences(answer.strip())

    def bare(sentence: str) -> str:
        return re.sub(r"\s+([.!?,;:。！？，])", r"\1", CITATION_MARK.sub("", sentence)).strip()

    marked = [s for s in parts if number in cited_numbers(s)]
    if marked:
        return [bare(s) for s in marked]
    if any(cited_numbers(s) for s in parts):
        return []  # other sentences cite other sources; nothing here names this one
    return [bare(s) for s in parts]


def supporting_quote(claims: list[str], source: str, *, limit: int = QUOTE_CHARS) -> str:
    """The sentence(s) of `source` that support `claims`, as an exact substring of `source`.

    Each claim picks the source sentence sharing the most of its content terms (and numbers);
    the quote runs from the first to the last picked sentence when that fits in `limit`, else it
    is the best one. Without any overlap, the start of the source.
    """
    spans = sentence_spans(source)
    words = [content_terms(span.of(source)) | _numbers(span.of(source)) for span in spans]
    picked: list[tuple[float, int]] = []
    for claim in claims:
        wanted = content_terms(claim) | _numbers(claim)
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
    start, end = spans[indexes[0]].start, spans[indexes[-1]].end
    if end - start > limit:
        best = max(picked)[1]
        start, end = spans[best].start, spans[best].end
    return source[start:end].strip()[:limit]
