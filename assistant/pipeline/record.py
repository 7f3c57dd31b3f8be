"""The last step of an answer: the unsaved Answer, a pure function of the finished turn and how
it ended (`record`), or of the turn and the cache hit that answered it (`record_cache_hit`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from assistant import grounding
from assistant.models import Answer
from assistant.pipeline.guard import redact
from assistant.pipeline.turn import Outcome, Source, Turn

if TYPE_CHECKING:
    from answer_cache.services import CacheHit


def guardrail_trace(turn: Turn, *, cached: bool = False) -> dict[str, Any] | None:
    """What the guardrails decided in this turn, as stored in Answer.guardrails (the one place
    the turn's verdicts become the record's). A cache hit served before any input check ran
    has none."""
    if cached and not turn.verdicts.get("input"):
        return None
    return turn.verdicts


def record(turn: Turn, outcome: Outcome) -> Answer:
    """The unsaved Answer of a finished turn: what it was made with, its trace, and its outcome."""
    config = turn.config
    return Answer(
        assistant=turn.assistant,
        user=turn.user if getattr(turn.user, "pk", None) else None,
        question=turn.question,
        model=config.model,
        seed=config.seed,
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=config.max_tokens,
        prompt=config.prompt,
        system_fingerprint=turn.fingerprint,
        retrieved=[s.trace() for s in turn.sources],
        tool_calls=turn.tool_calls,
        raw_output=redact(turn.raw[:20000], turn.guard),
        repaired=turn.repaired,
        prompt_tokens=turn.usage.prompt_tokens,
        completion_tokens=turn.usage.completion_tokens,
        latency_ms=turn.latency,
        guardrails=guardrail_trace(turn),
        route=turn.decision.as_json() if turn.decision else {},
        **_evidence_fields(turn),
        **outcome.fields,
    )


def record_cache_hit(turn: Turn, hit: CacheHit, total_ms: float) -> Answer:
    """The earlier answer, recorded as a new Answer that points at it (no model was called)."""
    fields = hit.answer_fields()
    fields["latency_ms"] = {**turn.latency, "cache": round(hit.latency_ms, 1), "total": round(total_ms, 1)}
    return Answer(
        **fields,
        user=turn.user if getattr(turn.user, "pk", None) else None,
        question=turn.question,
        guardrails=guardrail_trace(turn, cached=True),
    )


def _evidence_fields(turn: Turn) -> dict[str, Any]:
    selection = turn.selection
    if selection is None:
        return {}
    return {
        "evidence": [item.as_json() for item in selection.items],
        "evidence_strength": round(selection.strength, 4) if selection.items else None,
    }


def citation_records(
    sources: Sequence[Source], numbers: Sequence[int], answer: str = ""
) -> list[dict[str, Any]]:
    """The cited sources, each with the sentence(s) that support the answer's claims as its quote."""
    by_number = {s.number: s for s in sources}
    records = []
    for n in dict.fromkeys(numbers):
        source = by_number.get(n)
        if source is None:
            continue
        records.append(
            {
                "n": n,
                "chunk_id": source.chunk_id,
                "document_id": source.document_id,
                "title": source.title,
                "filename": source.filename,
                "page": source.page,
                "heading": source.heading,
                "quote": grounding.supporting_quote(grounding.claims_citing(answer, n), source.text),
                "quarantined": source.quarantined,
            }
        )
    return records
