from __future__ import annotations

from celery import shared_task

from usage import services


@shared_task
def rollup_recent(days: int = 2) -> int:
    """Beat: rebuild the daily usage rows of today and yesterday (idempotent upserts)."""
    return services.usage_rollup_recent(days=days)
