from __future__ import annotations

from celery import shared_task

from answer_cache import services


@shared_task
def purge_answer_cache() -> int:
    """Beat: delete cache entries that are expired, stale (a source chunk is gone) or flagged."""
    return services.cache_purge()
