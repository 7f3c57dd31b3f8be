"""Steps 5 and 7 of an answer (docs/architecture.md, "A question, end to end"): embed the
question once, then find the sources (a search, or a replay's pinned chunks), each retrieved
chunk checked for instructions to an AI."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence

from assistant.pipeline.turn import Source, Turn
from common.text import cosine, search_text
from gateway import provider
from guardrails.checks import check_chunk
from knowledge import selectors as knowledge


def retrieval_query(question: str, history: list[tuple[str, str]]) -> str:
    """A short follow-up ("and for GPL?") is searched together with the previous question
    (`common.text.search_text`, the rule the answer cache keys its entries by)."""
    return search_text(question, history)


def sources_from_hits(
    hits: Sequence[knowledge.SearchHit], start: int, *, via_tool: bool = False
) -> list[Source]:
    return [
        Source(
            number=start + i,
            chunk_id=hit.chunk.pk,
            document_id=hit.chunk.document_id,
            title=hit.document.title,
            filename=hit.document.filename,
            page=hit.chunk.page,
            heading=hit.chunk.heading,
            text=hit.chunk.text,
            score=round(hit.score, 5),
            vector_score=None if hit.vector_score is None else round(hit.vector_score, 4),
            keyword_score=None if hit.keyword_score is None else round(hit.keyword_score, 4),
            via_tool=via_tool,
        )
        for i, hit in enumerate(hits)
    ]


def embed_question(turn: Turn) -> None:
    """Embed the (redacted) question once: the input checks, retrieval and the answer cache
    share the vector. A follow-up is searched for with the previous question (see
    `retrieval_query`): both texts go in one request."""
    with turn.timed("embedding"):
        texts = [turn.question]
        query = retrieval_query(turn.question, turn.history)
        if query != turn.question:
            texts.append(query)
        vectors = provider.embed(texts, kind="query").vectors
        turn.query_vector, turn.retrieval_vector = vectors[0], vectors[-1]


def retrieval_vector(turn: Turn) -> list[float]:
    """The vector of what retrieval searches for: the question's own, or a follow-up's with the
    previous question (`embed_question` makes both)."""
    if turn.retrieval_vector is None:
        embed_question(turn)
    assert turn.retrieval_vector is not None
    return turn.retrieval_vector


def readable(turn: Turn) -> list[int]:
    """The collections the user may read within the assistant's scope, asked once per turn."""
    if turn.readable is None:
        turn.readable = knowledge.readable_collection_ids(turn.user, turn.scope)
    return turn.readable


def retrieve(turn: Turn, pinned_chunk_ids: list[int] | None = None) -> None:
    """The sources of the answer: a search for the question, or (a replay) the given chunks."""
    if pinned_chunk_ids is not None:
        _retrieve_pinned(turn, pinned_chunk_ids)
        return
    with turn.timed("retrieval"):
        hits = knowledge.search(
            turn.user,
            retrieval_query(turn.question, turn.history),
            turn.assistant.top_k,
            turn.scope,
            query_vector=retrieval_vector(turn),
            readable_ids=readable(turn),
        )
        turn.sources = guard_sources(turn, sources_from_hits(hits, 1))


def _retrieve_pinned(turn: Turn, chunk_ids: list[int]) -> None:
    """The given chunks (a replay), scored against the question as a search would have scored them.

    Without a similarity every pinned chunk would count as a weak match, and a replay would
    abstain where the original answered.
    """
    with turn.timed("retrieval"):
        hits = knowledge.hits_for_chunks(turn.user, chunk_ids)
        if hits:
            vector = retrieval_vector(turn)
            hits = [
                dataclasses.replace(hit, vector_score=cosine(vector, hit.chunk.embedding)) for hit in hits
            ]
        turn.sources = guard_sources(turn, sources_from_hits(hits, 1))


# check_chunk is a pure function of the text (rules only, ~1-6 ms a chunk), and the same chunks
# come back turn after turn: its verdicts are kept per process, by text.
_chunk_verdict = functools.lru_cache(maxsize=1024)(check_chunk)


def guard_sources(turn: Turn, sources: list[Source]) -> list[Source]:
    """Retrieved text is data, never instructions: a chunk addressed to an AI is neutralised.

    The neutralised text replaces the chunk's in the prompt; the source is marked quarantined
    in the trace and in its citation, and every chunk's verdict is recorded.
    """
    if not turn.guard.injection:
        return sources
    for source in sources:
        started = time.perf_counter()
        verdict = _chunk_verdict(source.text)
        if verdict.is_injection:
            source.text = verdict.neutralised_text
            source.quarantined = True
        turn.verdicts["chunks"].append(
            {
                "check": "injection",
                "n": source.number,
                "chunk_id": source.chunk_id,
                "action": "quarantine" if verdict.is_injection else "allow",
                "score": round(verdict.score, 4),
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "rules": list(verdict.rules),
                # Exactly what was cut out, shown in the source panel beside the passage.
                "removed": list(verdict.removed),
                "defanged_links": verdict.defanged_links,
            }
        )
    return sources


def best_vector_score(turn: Turn) -> float:
    return max((s.vector_score or 0.0 for s in turn.sources), default=0.0)


def retrieval_is_weak(turn: Turn) -> bool:
    return not turn.sources or best_vector_score(turn) < turn.assistant.min_similarity
