"""Periodic work for the assistant (scheduled in config/celery.py)."""

from __future__ import annotations

from celery import shared_task

from assistant import services


@shared_task(name="assistant.tasks.recover_orphaned_messages")
def recover_orphaned_messages() -> int:
    """Answers left "streaming" by a web process that died are marked interrupted (retryable)."""
    return services.messages_orphaned_recover()
