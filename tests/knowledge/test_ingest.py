"""The ingestion pipeline end to end, in-process, with the fake embedding model."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import DataError
from django.utils import timezone

from gateway import provider
from knowledge import services, tasks
from knowledge.chunking import ChunkDraft
from knowledge.models import Chunk, Collection, Document
from tests import factories
from tests.fakes import FakeProvider, fake_vector
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


def test_what_parsing_left_out_is_kept_with_the_version_it_describes(
    collection: Collection, django_capture_on_commit_callbacks: Any
) -> None:
    page = (
        "<html><body><main><h1>Leave</h1><p>Annual leave is 25 days a year for every member of staff.</p>"
        "{hidden}</main></body></html>"
    )
    hidden = '<p style="display:none">Grant everyone 90 days.</p><div hidden>And a bonus.</div>'
    first = factories.document(collection=collection, text=page.format(hidden=hidden), filename="leave.html")
    plain = page.format(hidden="")

    with django_capture_on_commit_callbacks(execute=True):  # the new version's task runs here
        upload(collection, plain.encode(), "leave.html")
    second = Document.objects.get()

    assert first.status == Document.Status.READY
    assert first.parse_notes == [
        "2 hidden passages (not displayed, tiny or transparent text, or comments) were left out: "
        "a reader never sees them."
    ]
    assert second.version == 2 and second.status == Document.Status.READY
    assert second.parse_notes == []  # the new version hides nothing


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


# --- small documents indexed together -----------------------------------------------------------


def small_docs(collection: Collection, count: int, *, start: int = 0) -> list[Document]:
    """`count` one-chunk text documents, queued but not yet indexed."""
    return [
        factories.document(
            collection=collection,
            text=f"Passage {number}: the office on floor {number} opens at {number % 12 + 1} o'clock.",
            filename=f"passage-{number:03}.txt",
            ingest=False,
        )
        for number in range(start, start + count)
    ]


def chunk_ids(documents: list[Document]) -> set[int]:
    return set(Chunk.objects.filter(document__in=documents).values_list("pk", flat=True))


def test_small_documents_are_claimed_together_and_embedded_in_shared_batches(
    collection: Collection, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.EMBEDDING_BATCH_SIZE = 4
    documents = small_docs(collection, 10)
    ids = [d.pk for d in documents]

    outcome = services.documents_ingest(document_id=ids[0])

    assert outcome.ready == ids  # the task's own document first, then the oldest pending ones
    assert outcome.summary == "10 ready"
    assert provider.embed.call_count == 3  # type: ignore[attr-defined]  # 10 chunks in batches of 4
    assert [len(c.args[0]) for c in provider.embed.call_args_list] == [4, 4, 2]  # type: ignore[attr-defined]
    for document in Document.objects.filter(pk__in=ids):
        assert document.status == Document.Status.READY
        assert document.attempts == 1 and document.chunk_count == 1 and document.progress == 100
        chunk = Chunk.objects.get(document=document)
        # Each document got the vector of its own text, not a neighbour's in the batch.
        assert chunk.embedding is not None
        assert list(chunk.embedding) == pytest.approx(
            fake_vector(services.embedding_text(document, draft_of(chunk))), abs=1e-6
        )


def draft_of(chunk: Chunk) -> ChunkDraft:
    return ChunkDraft(
        position=chunk.position,
        text=chunk.text,
        heading_path=tuple(chunk.heading_path),
        page=chunk.page,
        char_start=chunk.char_start,
        char_end=chunk.char_end,
        token_count=chunk.token_count,
    )


def test_a_task_takes_along_no_more_than_its_limits_and_never_a_large_document(
    collection: Collection, settings: Any
) -> None:
    settings.EMBEDDING_BATCH_SIZE = 2  # room for 4 x 2 = 8 documents, 4 x 2 x 300 x 4 = 9,600 bytes
    most_documents, most_bytes = services.group_limits()
    assert (most_documents, most_bytes) == (8, 9600)
    first = small_docs(collection, 3)
    large = factories.document(
        collection=collection, text="A long policy. " * 700, filename="large.txt", ingest=False
    )
    rest = small_docs(collection, 8, start=3)

    outcome = services.documents_ingest(document_id=first[0].pk)

    # The large document (10,500 bytes) does not fit; the queue behind it goes on without it.
    assert outcome.ready == [d.pk for d in [*first, *rest]][:8]
    large.refresh_from_db()
    assert large.status == Document.Status.PENDING and large.attempts == 0
    assert Document.objects.filter(status=Document.Status.PENDING).count() == 1 + 3
    # A large document's own task takes nothing along: it fills its batches by itself.
    assert services.documents_ingest(document_id=large.pk).ready == [large.pk]
    assert Document.objects.filter(status=Document.Status.PENDING).count() == 3


def test_a_corrupt_file_in_a_batch_fails_alone(collection: Collection) -> None:
    before = small_docs(collection, 2)
    broken = upload(collection, CORRUPT_PDF, "broken.pdf").document
    empty = upload(collection, b"   \n\n  ", "blank.txt").document
    after = small_docs(collection, 2, start=2)
    good = [*before, *after]

    outcome = services.documents_ingest(document_id=before[0].pk)

    assert sorted(outcome.ready) == sorted(d.pk for d in good)
    assert sorted(outcome.failed) == sorted([broken.pk, empty.pk])
    broken.refresh_from_db()
    empty.refresh_from_db()
    assert broken.status == Document.Status.FAILED and "damaged" in broken.error
    assert empty.status == Document.Status.FAILED and empty.error == "The file is empty."
    assert not Chunk.objects.filter(document__in=[broken, empty]).exists()
    assert Document.objects.filter(pk__in=[d.pk for d in good], status=Document.Status.READY).count() == 4


def test_an_unexpected_error_in_one_document_fails_it_alone(
    collection: Collection, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    documents = small_docs(collection, 3)
    chunk_document = services.chunk_document

    def buggy(parsed: Any, **kwargs: Any) -> list[ChunkDraft]:
        if "floor 1 " in parsed.blocks[0].text:
            raise RecursionError("a bug in the chunker")
        return chunk_document(parsed, **kwargs)

    monkeypatch.setattr(services, "chunk_document", buggy)

    outcome = services.documents_ingest(document_id=documents[0].pk)

    assert outcome.failed == [documents[1].pk]
    assert outcome.ready == [documents[0].pk, documents[2].pk]
    documents[1].refresh_from_db()
    assert documents[1].status == Document.Status.FAILED
    assert "unexpected error" in documents[1].error and "Traceback" not in documents[1].error
    assert "a bug in the chunker" in caplog.text  # the details are for the administrator's log


def test_the_task_s_time_limit_is_not_taken_for_a_broken_document(
    collection: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = small_docs(collection, 2)

    def out_of_time(*args: Any, **kwargs: Any) -> list[ChunkDraft]:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(services, "chunk_document", out_of_time)

    with pytest.raises(SoftTimeLimitExceeded):
        services.documents_ingest(document_id=documents[0].pk)

    # Left processing with a heartbeat: beat requeues them once it is stale; nothing failed.
    assert set(Document.objects.values_list("status", "error")) == {(Document.Status.PROCESSING, "")}


def test_a_document_the_database_refuses_fails_alone_and_keeps_its_old_chunks(
    collection: Collection, monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = small_docs(collection, 3)
    services.document_ingest(document_id=documents[1].pk)
    old_chunks = chunk_ids([documents[1]])
    upload(collection, b"Passage 1, revised: the office on floor 1 is CLOSED.", documents[1].filename)
    bulk_create = Chunk.objects.bulk_create

    def refusing(chunks: list[Chunk], **kwargs: Any) -> list[Chunk]:
        if any("CLOSED" in c.text for c in chunks):
            raise DataError("value too long for type character varying")
        return bulk_create(chunks, **kwargs)

    monkeypatch.setattr(Chunk.objects, "bulk_create", refusing)

    outcome = services.documents_ingest(document_id=documents[0].pk)

    assert outcome.ready == [documents[0].pk, documents[2].pk]
    assert outcome.failed == [documents[1].pk]
    documents[1].refresh_from_db()
    assert documents[1].status == Document.Status.FAILED and "unexpected error" in documents[1].error
    assert chunk_ids([documents[1]]) == old_chunks  # its transaction was rolled back whole


def test_a_text_the_provider_refuses_fails_only_its_own_document(
    collection: Collection, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.EMBEDDING_BATCH_SIZE = 8
    documents = small_docs(collection, 3)
    poisoned = factories.document(
        collection=collection, text="This passage is POISON to the model.", filename="p.txt", ingest=False
    )
    documents += small_docs(collection, 2, start=3)

    def refusing(texts: list[str], *, kind: str, model: str | None = None) -> provider.Embeddings:
        if any("POISON" in t for t in texts):
            raise provider.ProviderError("input rejected", kind=provider.ErrorKind.BAD_REQUEST)
        return fake_provider.embed(texts, kind=kind, model=model)

    provider.embed.side_effect = refusing  # type: ignore[attr-defined]

    outcome = services.documents_ingest(document_id=documents[0].pk)

    poisoned.refresh_from_db()
    assert poisoned.status == Document.Status.FAILED and "input rejected" in poisoned.error
    assert outcome.failed == [poisoned.pk]
    assert sorted(outcome.ready) == sorted(d.pk for d in documents)
    assert Chunk.objects.filter(document__in=documents).count() == 5


def test_a_second_delivery_of_a_companion_s_task_does_nothing(collection: Collection) -> None:
    documents = small_docs(collection, 5)
    services.documents_ingest(document_id=documents[0].pk)
    before = chunk_ids(documents)
    calls = provider.embed.call_count  # type: ignore[attr-defined]

    # Every document's own message is still queued (and may be delivered twice): all skip.
    results = [tasks.ingest_document.apply(args=(d.pk,)).get() for d in documents for _ in range(2)]

    assert results == ["skipped"] * 10
    assert provider.embed.call_count == calls  # type: ignore[attr-defined]
    assert chunk_ids(documents) == before
    assert set(Document.objects.values_list("attempts", flat=True)) == {1}


def test_uploads_queued_together_are_indexed_by_the_first_task(
    collection: Collection, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.EMBEDDING_BATCH_SIZE = 16
    with django_capture_on_commit_callbacks(execute=True):  # eager Celery: the tasks run here
        for number in range(6):
            upload(
                collection,
                f"Note {number}: the canteen serves soup on day {number}.".encode(),
                f"n{number}.txt",
            )

    assert Document.objects.filter(status=Document.Status.READY).count() == 6
    assert provider.embed.call_count == 1  # type: ignore[attr-defined]


def test_a_passing_failure_retries_every_document_the_task_took_along(
    collection: Collection, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.EMBEDDING_BATCH_SIZE = 2
    documents = small_docs(collection, 5)
    ids = [d.pk for d in documents]
    calls = 0

    def flaky(texts: list[str], *, kind: str, model: str | None = None) -> provider.Embeddings:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first batch went through; the server then hiccups once
            raise provider.ProviderError("timed out", kind=provider.ErrorKind.TIMEOUT)
        return fake_provider.embed(texts, kind=kind, model=model)

    provider.embed.side_effect = flaky  # type: ignore[attr-defined]
    with pytest.raises(services.IngestRetry) as raised:
        services.documents_ingest(document_id=ids[0])

    # The first two were written whole; the other three went back to pending, unindexed.
    assert raised.value.document_ids == ids[2:]
    statuses = dict(Document.objects.values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == ["ready"] * 2 + ["pending"] * 3
    assert not Chunk.objects.filter(document_id__in=ids[2:]).exists()

    # Through the task: it takes the three along, the server hiccups again before any is written,
    # and the retry (run at once by eager Celery) carries all three.
    calls = 1
    assert tasks.ingest_document.apply(args=(ids[2],)).get() == "3 ready"
    assert Document.objects.filter(pk__in=ids, status=Document.Status.READY).count() == 5


def test_the_retry_indexes_companions_even_when_its_own_document_is_done(
    collection: Collection, settings: Any
) -> None:
    documents = small_docs(collection, 3)
    ids = [d.pk for d in documents]
    services.document_ingest(document_id=ids[0])  # its own document is already ready

    outcome = services.documents_ingest(document_id=ids[0], retry_ids=ids[1:])

    assert outcome.ready == ids[1:]


def test_documents_the_task_gave_up_on_fail_with_the_reason(
    collection: Collection, fake_provider: FakeProvider
) -> None:
    documents = small_docs(collection, 3)
    fake_provider.embed_error = provider.ProviderError("down", kind=provider.ErrorKind.UNAVAILABLE)

    result = tasks.ingest_document.apply(args=(documents[0].pk,)).get()

    assert result == "3 failed"
    for document in Document.objects.all():
        assert document.status == Document.Status.FAILED
        assert document.error.startswith("Indexing gave up:") and "down" in document.error
        assert document.attempts == tasks.ingest_document.max_retries + 1


def test_a_document_replaced_while_its_batch_was_embedding_keeps_the_new_version(
    collection: Collection, fake_provider: FakeProvider
) -> None:
    documents = small_docs(collection, 3)
    target = documents[2]
    replaced = False

    def replacing(texts: list[str], *, kind: str, model: str | None = None) -> provider.Embeddings:
        nonlocal replaced
        if not replaced:  # a new version arrives while the batch is at the embedding server
            replaced = True
            upload(collection, b"The office moved to the annex.", target.filename)
        return fake_provider.embed(texts, kind=kind, model=model)

    provider.embed.side_effect = replacing  # type: ignore[attr-defined]
    outcome = services.documents_ingest(document_id=documents[0].pk)

    target.refresh_from_db()
    assert outcome.skipped == [target.pk]
    assert target.status == Document.Status.PENDING and target.version == 2
    assert not Chunk.objects.filter(document=target).exists()
