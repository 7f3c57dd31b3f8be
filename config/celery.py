"""The Celery application. Every periodic task is scheduled here, in one place."""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("groundwork")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # Every suite marked nightly runs against the current assistant settings.
    "evals-nightly": {
        "task": "evals.tasks.nightly_runs",
        "schedule": crontab(hour=2, minute=0),
    },
    # A worker killed mid-document leaves it "processing"; this puts it back in the queue.
    "knowledge-requeue-stalled": {
        "task": "knowledge.tasks.requeue_stalled_documents",
        "schedule": 60.0,
    },
    # Large collections get their own vector index, so filtered search keeps its recall.
    "knowledge-collection-indexes": {
        "task": "knowledge.tasks.sync_collection_indexes",
        "schedule": 600.0,
    },
    # A web process that dies mid-answer leaves its message "streaming"; this offers a retry.
    "assistant-recover-orphaned-messages": {
        "task": "assistant.tasks.recover_orphaned_messages",
        "schedule": 60.0,
    },
    # Cached answers past their time to live, or built from chunks that are gone.
    "answer-cache-purge": {
        "task": "answer_cache.tasks.purge_answer_cache",
        "schedule": 3600.0,
    },
    # Model calls summed per user, day, model and purpose for the dashboard (idempotent upserts).
    "usage-rollup": {
        "task": "usage.tasks.rollup_recent",
        "schedule": 300.0,
    },
}


@app.task(name="ops.ping")
def ping(value: str = "pong") -> str:
    """Echo for health checks and the round-trip test."""
    return value
