"""The guardrail steps of an answer: the input checks (step 8), which may end the turn with an
abstention and a safe rewrite, and the output checks on the model's answer (step 14)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from assistant.models import Assistant
from assistant.pipeline.prompting import messages
from assistant.pipeline.retrieval import best_vector_score, retrieval_is_weak, retrieval_query
from assistant.pipeline.turn import Outcome, Turn
from guardrails import pii
from guardrails.checks import GuardConfig, InputResult, check_input, check_output

if TYPE_CHECKING:
    from answer_cache.services import CacheHit

logger = logging.getLogger(__name__)

REWRITE_TEXT = "I can't answer this as it is asked. You can send the safer version below, or edit it first."
BLOCK_TEXT = "I can't help with this request."
WITHHELD_TEXT = (
    "The answer was withheld by a safety check, and staff have been asked to review it. "
    "Open the sources below to read what was found."
)
MAX_REWRITE_CHARS = 500  # Answer.rewrite's length


def guard_config(assistant: Assistant) -> GuardConfig:
    """The assistant's guardrail settings; stored settings that no longer parse fall back to the defaults.

    The admin form refuses bad settings, so this only happens to rows written another way.
    """
    try:
        return GuardConfig.from_dict(assistant.guardrails or None)
    except ValueError as exc:
        logger.warning("assistant %s has unusable guardrail settings (%s): defaults used", assistant.pk, exc)
        return GuardConfig()


def _scope_text(assistant: Assistant) -> str:
    """What the assistant is for: its stated scope and the descriptions of its collections."""
    descriptions = [d for d in assistant.collections.values_list("description", flat=True) if d.strip()]
    return "\n".join([assistant.scope, *descriptions]).strip()


def input_checked(turn: Turn, original: str, *, cached: CacheHit | None = None) -> InputResult:
    """The input checks on the user's message, reusing the question's vector and retrieval's best match.

    A question the knowledge base answers (a match at or above the assistant's own
    `min_similarity`, calibrated for its embedding model) is on topic by definition, so the
    scope check runs only for the others. So is a question close enough to one answered before
    to be `cached`, checked before any search: the best match its earlier question had stands
    for retrieval's (the documents that answered it are those its answer would be served from).
    An answer served from the cache this way records these verdicts but none for retrieved
    chunks or scope, since neither ran.
    """
    scope = "" if cached is not None or not retrieval_is_weak(turn) else _scope_text(turn.assistant)
    match = best_vector_score(turn) if turn.sources else None
    if cached is not None:
        match = _cached_match(cached)
    result = check_input(
        original,
        scope=scope,
        query_vector=turn.query_vector,
        retrieval_score=match,
        # A follow-up was searched for (and cached) together with the question before it: that
        # match vouches for nothing the follow-up itself says.
        retrieval_for_message=retrieval_query(turn.question, turn.history) == turn.question,
        config=turn.guard,
    )
    turn.verdicts["input"] = [v.as_json() for v in result.verdicts]
    turn.verdicts["input_action"] = result.action
    turn.verdicts["categories"] = list(result.categories)
    if result.notice:
        # Answered, with this shown: the question read as sensitive, and the documents answer it.
        turn.verdicts["notice"] = result.notice
        turn.verdicts["notice_categories"] = list(result.notice_categories)
    else:
        turn.verdicts.pop("notice", None)
        turn.verdicts.pop("notice_categories", None)
    # A flagged cache hit is checked again after retrieval: the record keeps the second verdicts
    # and the time of both.
    turn.add_latency("guard_input", result.latency_ms)
    return result


def _cached_match(hit: CacheHit) -> float | None:
    """The best vector match retrieval found for the cached answer's own question, if recorded."""
    scores = [
        float(source["vector_score"])
        for source in hit.answer.retrieved or []
        if isinstance(source, dict) and isinstance(source.get("vector_score"), int | float)
    ]
    return max(scores, default=None)


def _only_personal_data(result: InputResult) -> bool:
    return bool(result.categories) and all(c.startswith("pii:") for c in result.categories)


def stopped_by_input(turn: Turn, original: str) -> Outcome | None:
    """Step 8: the input checks; the abstention for a message they stop, or None to answer it
    (redacted).

    A safe rewrite is offered, editable, whenever one exists; only a request with none is refused.
    """
    result = input_checked(turn, original)
    if result.allowed or result.categories == ["off_topic"]:
        # Off topic alone coincides with weak retrieval (see input_checked): the not-found
        # abstention says why and still offers a more specific question and suggestions.
        return None
    offered = (result.rewrite or "").strip()
    if result.action == "rewrite" and _only_personal_data(result) and len(offered) > MAX_REWRITE_CHARS:
        # Too long to offer back: answer the redacted text, as pii_action "redact" would.
        turn.verdicts["input_action"] = "redact"
        return None
    if len(offered) > MAX_REWRITE_CHARS:
        offered = offered[: MAX_REWRITE_CHARS - 1].rsplit(" ", 1)[0] + "…"
    reason = result.reason or "A safety check stopped this message."
    text = f"{REWRITE_TEXT if offered else BLOCK_TEXT} {reason}"
    if offered:
        text += f"\n\nA safer version: “{offered}”"
    return Outcome.of(
        text=text, abstained=True, abstain_reason=shorten(reason, 200), confidence=0.0, rewrite=offered
    )


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def redact(text: str, config: GuardConfig) -> str:
    """Personal data out of text that is stored (raw output, grounding claims)."""
    return pii.redact(text, config.pii_kinds).text if config.pii else text


def output_checked(turn: Turn, text: str) -> tuple[str, str]:
    """The answer text to show, and the output action (allow, rewrite or block)."""
    result = check_output(text, system_prompt=messages(turn)[0]["content"], config=turn.guard)
    turn.verdicts["output"] = [v.as_json() for v in result.verdicts]
    turn.verdicts["output_action"] = result.action
    turn.verdicts["output_categories"] = list(result.categories)
    if result.reason:
        turn.verdicts["output_reason"] = result.reason
    turn.add_latency("guard_output", result.latency_ms)
    if result.action == "block":
        return WITHHELD_TEXT, "block"
    return result.text, result.action
