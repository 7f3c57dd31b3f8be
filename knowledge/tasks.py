from __future__ import annotations

import logging

from celery import shared_task

from knowledge import indexes, services

logger = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=5, acks_late=True)
def ingest_document(self: object, document_id: int, retry_ids: list[int] | None = None) -> str:
    """Index a document, and other small pending ones with it (services.documents_ingest).

    Safe to deliver twice: the service claims each document first, so a document already taken
    along by another task is skipped here. After a passing provider failure the task retries with
    every document it had put back to pending (`retry_ids`), so none is left waiting for the beat
    sweep; when the retries run out those documents fail with the reason.
    """
    task = self  # Celery's bound task
    try:
        outcome = services.documents_ingest(document_id=document_id, retry_ids=retry_ids or [])
    except services.IngestRetry as exc:
        ids = exc.document_ids
        if not ids:
            return "retry: nothing left to index"
        if task.request.retries >= task.max_retries:  # type: ignore[attr-defined]
            for pk in ids:
                services.document_mark_failed(document_id=pk, reason=f"Indexing gave up: {exc}")
            return f"{len(ids)} failed"
        raise task.retry(  # type: ignore[attr-defined]
            args=(ids[0],),
            kwargs={"retry_ids": ids[1:]},
            exc=exc,
            countdown=min(300, 10 * 2**task.request.retries),  # type: ignore[attr-defined]
        ) from exc
    return outcome.summary


@shared_task
def requeue_stalled_documents() -> int:
    """Beat: re-enqueue documents a dead worker left behind."""
    return len(services.stalled_documents_requeue())


@shared_task
def sync_collection_indexes() -> dict[str, object]:
    """Beat: partial vector indexes for large collections (see indexes.collection_indexes_sync)."""
    result = indexes.collection_indexes_sync()
    return {"created": result.created, "dropped": result.dropped, "skipped": result.skipped}
