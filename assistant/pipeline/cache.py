"""Steps 4 and 6 of an answer: the answer cache, looked up by the exact question before anything
is embedded, then by a similar question with the question's vector; a hit is served without a
model call. A cache failure is only a miss."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from answer_cache import services as answer_cache
from assistant.pipeline.guard import input_checked
from assistant.pipeline.record import record_cache_hit
from assistant.pipeline.retrieval import readable, retrieval_vector
from assistant.pipeline.turn import Delta, Done, Event, Turn

logger = logging.getLogger(__name__)


def exact_hit(turn: Turn) -> answer_cache.CacheHit | None:
    """Step 4: an earlier answer to the same question (no embedding), counted when found.

    It passed the input checks when it was first asked, so it is served at once.
    """
    if not turn.exact_tried:
        return None
    try:
        hit = answer_cache.cache_lookup_exact(
            user=turn.user,
            assistant=turn.assistant,
            question=turn.question,
            history=turn.history,
            readable=readable(turn),
        )
        if hit is not None:
            answer_cache.cache_lookup_count(assistant=turn.assistant, hit=hit)
        return hit
    except Exception:
        logger.exception("answer cache lookup failed; answering without it")
        turn.exact_tried = False  # the similar lookup tries the exact key again
        return None


def similar_hit(turn: Turn) -> answer_cache.CacheHit | None:
    """Step 6: an earlier answer to a similar question (by the retrieval vector), not yet counted:
    the input checks decide whether it is served (`prechecked`, then `count`)."""
    try:
        return answer_cache.cache_lookup_similar(
            user=turn.user,
            assistant=turn.assistant,
            question=turn.question,
            history=turn.history,
            query_vector=retrieval_vector(turn),
            # The exact key missed before embedding: only the nearest ones are needed then.
            try_exact=not turn.exact_tried,
            readable=readable(turn),
        )
    except Exception:
        logger.exception("answer cache lookup failed; answering without it")
        return None


def prechecked(turn: Turn, original: str, hit: answer_cache.CacheHit) -> bool:
    """Whether `hit` may be served before any search: the input checks find nothing in the message.

    A message they flag in any way takes the full path, as if there were no hit: retrieval, then
    the checks again with its best match, and the hit only if nothing stops it there.
    """
    checked = input_checked(turn, original, cached=hit)
    return checked.allowed and not checked.categories


def count(turn: Turn, hit: answer_cache.CacheHit | None) -> None:
    """Count the similar lookup in the cache statistics: the hit served, or a miss."""
    try:
        answer_cache.cache_lookup_count(assistant=turn.assistant, hit=hit)
    except Exception:
        logger.exception("answer cache count failed")


def served(turn: Turn, hit: answer_cache.CacheHit) -> Iterator[Event]:
    """The earlier answer's text, then its record (a new Answer pointing at it)."""
    answer = record_cache_hit(turn, hit, turn.elapsed_ms())
    yield Delta(hit.text)
    yield Done(answer)
