from __future__ import annotations

import logging

from celery import shared_task

from knowledge import services

logger = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=5, acks_late=True)
def ingest_document(self: object, document_id: int) -> str:
    """Index one document. Safe to deliver twice: the service claims the document first."""
    try:
        document = services.document_ingest(document_id=document_id)
    except services.IngestRetry as exc:
        task = self  # Celery's bound task
        if task.request.retries >= task.max_retries:  # type: ignore[attr-defined]
            services.document_mark_failed(document_id=document_id, reason=f"Indexing gave up: {exc}")
            return "failed"
        raise task.retry(exc=exc, countdown=min(300, 10 * 2**task.request.retries)) from exc  # type: ignore[attr-defined]
    return "skipped" if document is None else document.status


@shared_task
def requeue_stalled_documents() -> int:
    """Beat: re-enqueue documents a dead worker left behind."""
    return len(services.stalled_documents_requeue())


@shared_task
def sync_collection_indexes() -> dict[str, object]:
    """Beat: partial vector indexes for large collections (see services.collection_indexes_sync)."""
    result = services.collection_indexes_sync()
    return {"created": result.created, "dropped": result.dropped, "skipped": result.skipped}
