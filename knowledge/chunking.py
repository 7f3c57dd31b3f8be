"""Cut a parsed document into overlapping, structure-aware chunks within a token budget.

Every chunk is a contiguous span of `document_text(parsed)`: `text == document_text(parsed)
[char_start:char_end]` holds for all chunks, including split and overlapped ones, so a chunk can
always be located in (and highlighted within) the original text.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from knowledge.parsing import Block, ParsedDocument

BLOCK_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ChunkDraft:
    position: int
    text: str
    heading_path: tuple[str, ...]
    page: int | None
    char_start: int
    char_end: int
    token_count: int


# Scripts written without spaces, where a subword tokenizer spends about a token per character.
_CJK_RANGES = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK = re.compile(f"[{_CJK_RANGES}]")
_WORD = re.compile(rf"[^\W{_CJK_RANGES}]+")
_PUNCT = re.compile(r"[^\w\s]")
# Word-level split points: runs of non-space, non-CJK characters, or single CJK characters.
_SPLIT_WORD = re.compile(rf"[{_CJK_RANGES}]|[^\s{_CJK_RANGES}]+")
# Where a new sentence (or line) starts: after terminal punctuation and any closing quotes
# followed by whitespace, after CJK full stops (no space needed), and after a line break.
_SENTENCE_BREAK = re.compile(
    r"[.!?\u2026][\"'\u201d\u2019)\]]*\s+"
    r"|[\u3002\uff01\uff1f][\"'\u201d\u2019)\]\u300d\u300f\uff09]*\s*"
    r"|\n\s*"
)

_Counts = tuple[int, int, int]  # (words, CJK characters, punctuation marks)


def estimate_tokens(text: str) -> int:
    """Estimate how many tokens a multilingual subword tokenizer would produce for `text`.

    No tokenizer files may be loaded at run time, so this is a heuristic, tuned to err on the
    high side so chunks stay inside an embedding model's window:

    - a space-separated word costs 1.3 tokens (English averages 1.2-1.4 with SentencePiece
      vocabularies such as XLM-R's);
    - each CJK character and each punctuation mark costs 1 token, since those scripts have no
      spaces and punctuation is almost always its own token;
    - never less than one token per 4 characters, which catches long compounds, identifiers and
      URLs that split into many pieces.

    Integer arithmetic keeps the result exact and deterministic. An empty string is 0.
    """
    return _tokens(_counts(text), len(text))


def document_text(parsed: ParsedDocument) -> str:
    """The document's full text: block texts joined by a blank line; chunk offsets index it."""
    return BLOCK_SEPARATOR.join(block.text for block in parsed.blocks)


def chunk_document(
    parsed: ParsedDocument, *, max_tokens: int = 300, overlap_tokens: int = 40
) -> list[ChunkDraft]:
    """Split a document into chunks of at most `max_tokens` estimated tokens.

    Consecutive blocks under the same heading path are packed greedily; a heading change always
    starts a new chunk. A block over the budget is split at sentence (or line) boundaries, and a
    sentence still over the budget at word boundaries, never inside a word. Each chunk after the
    first of a section starts with the previous chunk's last whole sentences, up to about
    `overlap_tokens`, when they fit the budget together with new text.

    The one way to exceed `max_tokens` is a single word (no spaces, e.g. a long URL or base64
    blob) that is itself over the budget: it becomes a chunk of its own, unsplit.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError("overlap_tokens must be between 0 and max_tokens - 1")

    text = document_text(parsed)
    block_starts: list[int] = []
    offset = 0
    for block in parsed.blocks:
        block_starts.append(offset)
        offset += len(block.text) + len(BLOCK_SEPARATOR)

    chunks: list[ChunkDraft] = []
    index = 0
    while index < len(parsed.blocks):
        # A section is a run of consecutive blocks sharing one heading path.
        path = parsed.blocks[index].heading_path
        end = index
        while end < len(parsed.blocks) and parsed.blocks[end].heading_path == path:
            end += 1
        section = _Section(text, block_starts[index:end], parsed.blocks[index:end], max_tokens)
        for start, stop in section.spans(overlap_tokens):
            block_index = bisect_right(block_starts, start) - 1
            chunk_text = text[start:stop]
            chunks.append(
                ChunkDraft(
                    position=len(chunks),
                    text=chunk_text,
                    heading_path=path,
                    page=parsed.blocks[block_index].page,
                    char_start=start,
                    char_end=stop,
                    token_count=estimate_tokens(chunk_text),
                )
            )
        index = end
    return chunks


@dataclass(frozen=True)
class _Unit:
    """The smallest piece packing moves around: a block, sentence or word (trimmed span)."""

    start: int
    end: int
    counts: _Counts


class _Section:
    """Packing state for one run of blocks under the same headings."""

    def __init__(self, text: str, starts: list[int], blocks: tuple[Block, ...], max_tokens: int) -> None:
        self.text = text
        self.max_tokens = max_tokens
        self.units: list[_Unit] = []
        sentence_starts: list[int] = []
        for start, block in zip(starts, blocks, strict=True):
            self._add_block(start, start + len(block.text), sentence_starts)
        self.sentence_starts = sorted(set(sentence_starts))

    def _add_block(self, start: int, end: int, sentence_starts: list[int]) -> None:
        start, end = _trim(self.text, start, end)
        if start >= end:
            return
        sentences = _sentence_spans(self.text, start, end)
        sentence_starts.extend(sentence_start for sentence_start, _ in sentences)
        counts = _counts(self.text[start:end])
        if _tokens(counts, end - start) <= self.max_tokens:
            self.units.append(_Unit(start, end, counts))
            return
        for sentence_start, sentence_end in sentences:
            sentence_counts = _counts(self.text[sentence_start:sentence_end])
            if _tokens(sentence_counts, sentence_end - sentence_start) <= self.max_tokens:
                self.units.append(_Unit(sentence_start, sentence_end, sentence_counts))
                continue
            for match in _SPLIT_WORD.finditer(self.text, sentence_start, sentence_end):
                self.units.append(_Unit(match.start(), match.end(), _counts(match.group())))

    def spans(self, overlap_tokens: int) -> list[tuple[int, int]]:
        """(start, end) offsets of this section's chunks, overlap included."""
        spans: list[tuple[int, int]] = []
        index = 0
        while index < len(self.units):
            first = self.units[index]
            start = first.start
            base: _Counts = (0, 0, 0)
            if spans and overlap_tokens:
                overlap_start = self._overlap_start(*spans[-1], first, overlap_tokens)
                if overlap_start is not None:
                    start = overlap_start
                    # The gap before `first` is whitespace, so counts simply add up.
                    base = _counts(self.text[start : first.start])
            counts = _add(base, first.counts)
            end = first.end
            index += 1
            while index < len(self.units):
                unit = self.units[index]
                candidate = _add(counts, unit.counts)
                if _tokens(candidate, unit.end - start) > self.max_tokens:
                    break
                counts = candidate
                end = unit.end
                index += 1
            spans.append((start, end))
        return spans

    def _overlap_start(
        self, previous_start: int, previous_end: int, first: _Unit, overlap_tokens: int
    ) -> int | None:
        """Earliest sentence start in the previous chunk whose tail fits the overlap budget."""
        low = bisect_right(self.sentence_starts, previous_start)
        high = bisect_left(self.sentence_starts, previous_end)
        candidates = self.sentence_starts[low:high]
        best: int | None = None
        # Walk back from the end: the tail only grows, so stop at the first one too long.
        for position in reversed(range(len(candidates))):
            if estimate_tokens(self.text[candidates[position] : previous_end]) > overlap_tokens:
                break
            best = position
        if best is None:
            return None
        # Overlap must leave room for at least the first new unit; shorten it until it does.
        for candidate in candidates[best:]:
            if estimate_tokens(self.text[candidate : first.end]) <= self.max_tokens:
                return candidate
        return None


def _counts(text: str) -> _Counts:
    return (
        len(_WORD.findall(text)),
        len(_CJK.findall(text)),
        len(_PUNCT.findall(text)),
    )


def _add(left: _Counts, right: _Counts) -> _Counts:
    return (left[0] + right[0], left[1] + right[1], left[2] + right[2])


def _tokens(counts: _Counts, chars: int) -> int:
    if chars <= 0:
        return 0
    words, cjk, punct = counts
    by_words = (13 * words + 10 * (cjk + punct) + 9) // 10
    by_chars = (chars + 3) // 4
    return max(by_words, by_chars)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Trimmed sentence (or line) spans covering text[start:end], in order."""
    spans: list[tuple[int, int]] = []
    sentence_start = start
    for match in _SENTENCE_BREAK.finditer(text, start, end):
        if match.end() >= end:
            break
        span = _trim(text, sentence_start, match.end())
        if span[0] < span[1]:
            spans.append(span)
        sentence_start = match.end()
    span = _trim(text, sentence_start, end)
    if span[0] < span[1]:
        spans.append(span)
    return spans
