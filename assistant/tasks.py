"""Background work for the assistant: periodic jobs (scheduled in config/celery.py) and what
follows a saved answer."""

from __future__ import annotations

import logging

from celery import shared_task

from assistant import services
from assistant.models import Answer

logger = logging.getLogger(__name__)

BOOKKEEPING_RETRIES = 3


@shared_task(name="assistant.tasks.recover_orphaned_messages")
def recover_orphaned_messages() -> int:
    """Answers left "streaming" by a web process that died are marked interrupted (retryable)."""
    return services.messages_orphaned_recover()


@shared_task(name="assistant.tasks.answer_bookkeep", bind=True, max_retries=BOOKKEEPING_RETRIES)
def answer_bookkeep(
    self: object,
    *,
    answer_id: int,
    call_ids: list[int],
    query_vector: list[float] | None = None,
    history: list[list[str]] | None = None,
) -> bool:
    """After an answer is saved: attach its model calls and offer it to the answer cache.

    Queued once the answer is committed (`services.answer_bookkeeping_enqueue`). A failure is
    logged and retried with a growing delay; the answer itself is already saved and shown, so a
    last failure loses at most its cache entry and the calls' link to it. Returns whether it ran.
    """
    answer = Answer.objects.select_related("assistant", "user").filter(pk=answer_id).first()
    if answer is None:
        logger.warning("bookkeeping: answer %s does not exist (deleted, or not committed yet)", answer_id)
        return False
    try:
        services.answer_bookkeeping(
            answer=answer, call_ids=call_ids, query_vector=query_vector, history=history
        )
    except Exception as exc:
        retries = int(getattr(getattr(self, "request", None), "retries", 0) or 0)
        if retries >= BOOKKEEPING_RETRIES:
            logger.exception("bookkeeping of answer %s failed for good", answer_id)
            return False
        logger.warning("bookkeeping of answer %s failed (%s); retrying", answer_id, exc)
        raise self.retry(exc=exc, countdown=2 ** (retries + 1)) from exc  # type: ignore[attr-defined]
    return True
