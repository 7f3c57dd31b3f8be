"""The ingestion pipeline end to end, in-process, with the fake embedding model."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.utils import timezone

from gateway import provider
from knowledge import services
from knowledge.models import Chunk, Collection, Document
from tests import factories
from tests.fakes import FakeProvider
from tests.knowledge.samples import CORRUPT_PDF, HANDBOOK, encrypted_pdf, text_pdf

pytestmark = pytest.mark.django_db


def stored_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def upload(collection: Collection, data: bytes, filename: str) -> services.UploadOutcome:
    return services.document_upload(collection=collection, file=ContentFile(data), filename=filename)


@pytest.fixture
def collection() -> Collection:
    return factories.collection(name="Handbooks")


def test_markdown_document_is_chunked_embedded_and_ready(collection: Collection) -> None:
    document = factories.document(collection=collection, text=HANDBOOK, filename="handbook.md")

    chunks = list(Chunk.objects.filter(document=document))
    assert document.status == Document.Status.READY
    assert document.progress == 100
    assert document.kind == Document.Kind.MARKDOWN
    assert document.title == "Staff handbook"
    assert document.error == ""
    assert document.indexed_at is not None
    assert document.chunk_count == len(chunks) >= 2
    assert document.token_count == sum(c.token_count for c in chunks) > 0
    assert {c.collection_id for c in chunks} == {collection.pk}
    leave = next(c for c in chunks if "annual leave" in c.text)
    assert leave.heading_path == ["Staff handbook", "Leave"]
    assert all(c.token_count > 0 and len(c.embedding) == settings.EMBEDDING_DIMENSIONS for c in chunks)


def test_identical_upload_is_a_duplicate_and_stores_nothing(collection: Collection) -> None:
    first = factories.document(collection=collection, text=HANDBOOK, filename="handbook.md")
    files_before, chunks_before = stored_files(), Chunk.objects.count()

    outcome = upload(collection, HANDBOOK.encode(), "copy-of-handbook.md")

    assert outcome.action == "duplicate"
    assert outcome.document.pk == first.pk
    assert "Already present" in outcome.message
    assert Document.objects.count() == 1
    assert Chunk.objects.count() == chunks_before
    assert stored_files() == files_before


def test_same_name_new_content_becomes_version_two(
    collection: Collection, django_capture_on_commit_callbacks: Any
) -> None:
    first = factories.document(collection=collection, text=HANDBOOK, filename="handbook.md")
    old_file = Path(first.file.path)
    changed = HANDBOOK.replace("twenty-five days", "thirty days").replace("economy", "business")

    with django_capture_on_commit_callbacks(execute=True):  # deletes the old file, runs the task
        outcome = upload(collection, changed.encode(), "handbook.md")

    document = Document.objects.get()
    texts = " ".join(Chunk.objects.filter(document=document).values_list("text", flat=True))
    assert outcome.action == "new_version"
    assert document.pk == first.pk
    assert document.version == 2
    assert document.status == Document.Status.READY
    assert "thirty days" in texts and "business fares" in texts
    assert "twenty-five" not in texts and "economy" not in texts
    assert not old_file.exists()
    assert stored_files() == [Path(document.file.path)]


def test_delete_removes_chunks_and_file(
    collection: Collection, django_capture_on_commit_callbacks: Any
) -> None:
    document = factories.document(collection=collection, text=HANDBOOK, filename="handbook.md")
    path = Path(document.file.path)
    assert path.exists() and Chunk.objects.filter(document=document).exists()

    with django_capture_on_commit_callbacks(execute=True):
        services.document_delete(document=document)

    assert not Document.objects.exists()
    assert not Chunk.objects.exists()
    assert not path.exists()


def test_corrupt_pdf_fails_readably_and_the_batch_goes_on(
    collection: Collection, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):  # eager Celery: the tasks run here
        broken = upload(collection, CORRUPT_PDF, "broken.pdf").document
        good = upload(collection, text_pdf("Fire drills happen every quarter."), "drills.pdf").document

    broken.refresh_from_db()
    good.refresh_from_db()
    assert broken.status == Document.Status.FAILED
    assert "damaged" in broken.error
    assert not Chunk.objects.filter(document=broken).exists()
    assert good.status == Document.Status.READY
    assert good.kind == Document.Kind.PDF
    assert good.page_count == 1
    assert Chunk.objects.get(document=good).page == 1


def test_encrypted_pdf_fails_with_password_message(collection: Collection) -> None:
    outcome = upload(collection, encrypted_pdf("Salaries for next year."), "salaries.pdf")

    services.document_ingest(document_id=outcome.document.pk)

    document = Document.objects.get()
    assert document.status == Document.Status.FAILED
    assert "password" in document.error
    assert document.chunk_count == 0


def test_oversized_and_empty_uploads_are_rejected_before_storage(
    collection: Collection, settings: Any
) -> None:
    settings.UPLOAD_MAX_BYTES = 100

    with pytest.raises(services.UploadRejected, match="limit"):
        upload(collection, b"x" * 101, "big.txt")
    with pytest.raises(services.UploadRejected, match="empty"):
        upload(collection, b"", "empty.txt")

    assert not Document.objects.exists()
    assert stored_files() == []


def test_claim_is_idempotent(collection: Collection) -> None:
    document = factories.document(collection=collection, text=HANDBOOK, ingest=False)

    first = services.document_ingest(document_id=document.pk)
    chunk_ids = set(Chunk.objects.values_list("pk", flat=True))
    second = services.document_ingest(document_id=document.pk)

    assert first is not None and first.status == Document.Status.READY
    assert second is None
    assert set(Chunk.objects.values_list("pk", flat=True)) == chunk_ids


def test_document_abandoned_by_a_dead_worker_is_recovered(
    collection: Collection, django_capture_on_commit_callbacks: Any
) -> None:
    abandoned = factories.document(collection=collection, text=HANDBOOK, filename="a.md", ingest=False)
    live = factories.document(
        collection=collection, text="Another text entirely.", filename="b.md", ingest=False
    )
    now = timezone.now()
    # The first worker died mid-document; the second is alive and indexing.
    Document.objects.filter(pk=abandoned.pk).update(
        status=Document.Status.PROCESSING, heartbeat_at=now - services.STALE_AFTER - timedelta(minutes=1)
    )
    Document.objects.filter(pk=live.pk).update(status=Document.Status.PROCESSING, heartbeat_at=now)

    with django_capture_on_commit_callbacks(execute=True):
        requeued = services.stalled_documents_requeue()

    abandoned.refresh_from_db()
    live.refresh_from_db()
    assert requeued == [abandoned.pk]
    assert abandoned.status == Document.Status.READY
    assert abandoned.attempts == 1
    assert live.status == Document.Status.PROCESSING


def test_retryable_provider_failure_leaves_document_pending_and_unindexed(
    collection: Collection, fake_provider: FakeProvider
) -> None:
    document = factories.document(collection=collection, text=HANDBOOK, ingest=False)
    fake_provider.embed_error = provider.ProviderError("down", kind=provider.ErrorKind.UNAVAILABLE)

    with pytest.raises(services.IngestRetry, match="down"):
        services.document_ingest(document_id=document.pk)

    document.refresh_from_db()
    assert document.status == Document.Status.PENDING
    assert document.chunk_count == 0
    assert not Chunk.objects.filter(document=document).exists()

    fake_provider.embed_error = None  # the server is back: the retry indexes it
    assert services.document_ingest(document_id=document.pk) is not None
    document.refresh_from_db()
    assert document.status == Document.Status.READY


def test_provider_failure_midway_keeps_the_previous_version_whole(
    collection: Collection, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.EMBEDDING_BATCH_SIZE = 1
    document = factories.document(collection=collection, text=HANDBOOK, filename="handbook.md")
    old_chunks = set(Chunk.objects.values_list("pk", "text"))
    calls = 0

    def flaky(texts: list[str], *, kind: str, model: str | None = None) -> provider.Embeddings:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise provider.ProviderError("timed out", kind=provider.ErrorKind.TIMEOUT)
        return fake_provider.embed(texts, kind=kind, model=model)

    provider.embed.side_effect = flaky  # type: ignore[attr-defined]
    upload(collection, HANDBOOK.replace("thirty", "sixty").encode(), "handbook.md")

    with pytest.raises(services.IngestRetry):
        services.document_ingest(document_id=document.pk)

    document.refresh_from_db()
    assert calls == 2
    assert document.status == Document.Status.PENDING
    assert document.version == 2
    assert set(Chunk.objects.values_list("pk", "text")) == old_chunks


def test_permanent_provider_failure_fails_the_document(
    collection: Collection, fake_provider: FakeProvider
) -> None:
    document = factories.document(collection=collection, text=HANDBOOK, ingest=False)
    fake_provider.embed_error = provider.ProviderError("input too long", kind=provider.ErrorKind.BAD_REQUEST)

    assert services.document_ingest(document_id=document.pk) is None

    document.refresh_from_db()
    assert document.status == Document.Status.FAILED
    assert "input too long" in document.error
