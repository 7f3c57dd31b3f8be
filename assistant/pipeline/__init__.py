"""The answer pipeline: retrieve, prompt, call the model in JSON mode, validate, check, record.

`answer_events` is a generator so the chat page can stream the answer as it is written; every
other caller (the API, the CLI, evals, replays) drains it with `run_to_answer`. It reads as the
numbered steps of docs/architecture.md ("A question, end to end", 3 to 15), each a function of a
module of this package: a step that may end the turn returns its outcome (or None), generation
streams through one sub-generator that returns the model's reply, and the record is made from
the finished turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from assistant import evidence
from assistant.models import Answer, AnswerSource, Assistant
from assistant.pipeline import cache
from assistant.pipeline.generation import generate
from assistant.pipeline.guard import WITHHELD_TEXT, guard_config, stopped_by_input
from assistant.pipeline.payload import AnswerFieldStream, parse_payload
from assistant.pipeline.prompting import MAX_TOOL_ROUNDS, TOOLS, fill_template, messages, route, tool_rounds
from assistant.pipeline.record import citation_records, record
from assistant.pipeline.reply import (
    EVIDENCE_WEAK_REASON,
    FALLBACK_TEXT,
    MODEL_ABSTAINED,
    MODEL_UNSUPPORTED,
    MODEL_UNUSABLE,
    NOT_FOUND_TEXT,
    final_outcome,
)
from assistant.pipeline.retrieval import (
    embed_question,
    retrieval_is_weak,
    retrieval_query,
    retrieve,
    sources_from_hits,
)
from assistant.pipeline.suggestions import suggestions_from_sources, vague_rewrite
from assistant.pipeline.turn import (
    MAX_QUESTION_CHARS,
    Delta,
    Done,
    Event,
    EvidenceFound,
    Outcome,
    QuestionRejected,
    Settings,
    Source,
    Stage,
    Turn,
    validate_question,
)
from assistant.prompts import ANSWER_SCHEMA
from guardrails import pii
from guardrails.checks import provider_text

__all__ = [
    "ANSWER_SCHEMA",
    "EVIDENCE_WEAK_REASON",
    "FALLBACK_TEXT",
    "MAX_QUESTION_CHARS",
    "MAX_TOOL_ROUNDS",
    "MODEL_ABSTAINED",
    "MODEL_UNSUPPORTED",
    "MODEL_UNUSABLE",
    "NOT_FOUND_TEXT",
    "OFF_TOPIC_REASON",
    "TOOLS",
    "WEAK_RETRIEVAL_REASON",
    "WITHHELD_TEXT",
    "AnswerFieldStream",
    "Delta",
    "Done",
    "Event",
    "EvidenceFound",
    "QuestionRejected",
    "Settings",
    "Source",
    "Stage",
    "Turn",
    "answer_events",
    "citation_records",
    "fill_template",
    "guard_config",
    "messages",
    "parse_payload",
    "retrieval_is_weak",
    "retrieval_query",
    "retrieve",
    "run_to_answer",
    "run_to_done",
    "sources_from_hits",
    "suggestions_from_sources",
    "vague_rewrite",
    "validate_question",
]

WEAK_RETRIEVAL_REASON = "Nothing in the knowledge you can read matches this question closely enough."
OFF_TOPIC_REASON = (
    "The question is outside what this assistant is for, and nothing in your knowledge matches it."
)


def answer_events(
    *,
    assistant: Assistant,
    user: Any,
    question: str,
    history: list[tuple[str, str]] | None = None,
    config: Settings | None = None,
    pinned_chunk_ids: list[int] | None = None,
) -> Iterator[Event]:
    """Make one answer, yielding progress and answer text as it streams; ends with Done.

    The Answer in Done is not saved: the caller attaches it to its message and saves it.
    ProviderError propagates when the model cannot be reached (the caller offers a retry).

    Guardrails: from here on only the normalised, redacted question (and history) is used, so
    personal data reaches neither provider nor the Answer; the user's own message keeps the
    original. A message the input checks stop gets an abstention with the reason and a safe
    rewrite, without a chat call; retrieved chunks holding instructions are neutralised; the
    answer is redacted as it streams and checked as a whole at the end.
    """
    turn, original = _begin(assistant, user, question, history, config)  # 3.
    replaying = pinned_chunk_ids is not None or config is not None
    # 4. The same question asked before is answered again without embedding it (not when the
    # message held personal data: the input checks decide what happens to it under pii_action).
    turn.exact_tried = not (replaying or _personal(turn, original))
    hit = cache.exact_hit(turn)
    if hit is not None:
        yield from cache.served(turn, hit)
        return
    yield Stage("retrieving")
    embed_question(turn)  # 5.
    # 6. A paraphrase of a question answered before is served without a search when the input
    # checks find nothing in it; the lookup is counted once that is decided.
    hit = None if replaying else cache.similar_hit(turn)
    if hit is not None and cache.prechecked(turn, original, hit):
        cache.count(turn, hit)
        yield from cache.served(turn, hit)
        return
    retrieve(turn, pinned_chunk_ids)  # 7.
    stopped = stopped_by_input(turn, original)  # 8.
    if stopped is not None:
        yield from _ended(turn, lambda _turn: stopped)
        return
    if not replaying:
        cache.count(turn, hit)
    if hit is not None:  # 6, decided: a flagged message the checks let through after retrieval
        yield from cache.served(turn, hit)
        return
    yield from _evidence(turn)  # 9.
    if retrieval_is_weak(turn):  # 10.
        yield from _ended(turn, _not_found)
        return
    route(turn, _pinned_model(assistant, config))  # 11.
    if assistant.tools_enabled:  # 12.
        yield Stage("searching")
        tool_rounds(turn)
    reply = yield from generate(turn)  # 13, 14.
    yield from _ended(turn, partial(final_outcome, reply=reply), streamed=True)  # 15.


def _begin(
    assistant: Assistant,
    user: Any,
    question: str,
    history: list[tuple[str, str]] | None,
    config: Settings | None,
) -> tuple[Turn, str]:
    """Step 3: the turn for the normalised, redacted question, and the user's original message."""
    began = time.perf_counter()
    original = validate_question(question)
    rules = guard_config(assistant)
    redacted = provider_text(original, rules).strip()
    if not redacted:
        raise QuestionRejected("Type a question first.")
    turn = Turn(
        assistant=assistant,
        user=user,
        question=redacted,
        history=[(provider_text(q, rules), provider_text(a, rules)) for q, a in history or []],
        config=config or Settings.of(assistant),
        guard=rules,
        began=began,
    )
    return turn, original


def _personal(turn: Turn, original: str) -> bool:
    """Whether the message held personal data the guardrails redact."""
    rules = turn.guard
    return rules.pii and (bool(pii.find(original, rules.pii_kinds)) or turn.question != original)


def _pinned_model(assistant: Assistant, config: Settings | None) -> str | None:
    """A replay or an eval run that names another model than the assistant's keeps that model."""
    if config is not None and (config.pinned or config.model != assistant.chat_model):
        return config.model
    return None


def _evidence(turn: Turn) -> Iterator[Event]:
    """Step 9: the sentences of the sources that best answer the question (`evidence.select`)."""
    if not turn.sources:
        return
    turn.selection = evidence.select(turn.question, turn.sources, query_vector=turn.retrieval_vector)
    turn.add_latency("evidence", turn.selection.latency_ms)
    if turn.selection.items:
        yield EvidenceFound(items=turn.selection.items, level=turn.selection.level)


def _not_found(turn: Turn) -> Outcome:
    """Step 10: nothing retrieved matches closely enough; a more specific question is offered."""
    off_topic = "off_topic" in turn.verdicts.get("categories", [])
    return Outcome.of(
        text=NOT_FOUND_TEXT,
        abstained=True,
        answer_source=AnswerSource.NONE,
        abstain_reason=OFF_TOPIC_REASON if off_topic else WEAK_RETRIEVAL_REASON,
        confidence=0.0,
        rewrite=vague_rewrite(turn.question, turn.sources),
        suggestions=suggestions_from_sources(turn.sources, turn.question),
    )


def _ended(turn: Turn, outcome: Callable[[Turn], Outcome], *, streamed: bool = False) -> Iterator[Event]:
    """Step 15, once the turn is finished: its outcome, and the record of both. Text not streamed
    yet comes first, whole; a generated answer the cache may keep carries what retrieval
    searched for, so the cache stores it under the same key and vector."""
    turn.finish()
    answer = record(turn, outcome(turn))
    if not streamed:
        yield Delta(answer.text)
        yield Done(answer)
        return
    cacheable = answer.answer_source != AnswerSource.NONE
    yield Done(
        answer,
        query_vector=turn.retrieval_vector if cacheable else None,
        history=turn.history if cacheable else None,
    )


def run_to_done(**kwargs: Any) -> Done:
    """Drain `answer_events` and return its final event (the unsaved Answer and its vector)."""
    for event in answer_events(**kwargs):
        if isinstance(event, Done):
            return event
    raise RuntimeError("the answer pipeline ended without an answer")


def run_to_answer(**kwargs: Any) -> Answer:
    """Drain `answer_events` and return its (unsaved) Answer."""
    return run_to_done(**kwargs).answer
