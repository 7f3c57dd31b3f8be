"""Writes for the knowledge app: collections, uploads, the ingestion pipeline, deletion."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePath
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import File
from django.db import connection, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from gateway import provider
from knowledge.chunking import ChunkDraft, chunk_document
from knowledge.models import HNSW_EF_CONSTRUCTION, HNSW_M, Chunk, Collection, Document
from knowledge.parsing import ParseError, parse_document
from knowledge.selectors import (
    COLLECTION_INDEX_PREFIX,
    COLLECTION_INDEX_PREFIXES,
    COLLECTION_TEXT_INDEX_PREFIX,
    collection_indexes,
)

logger = logging.getLogger(__name__)

# A document whose worker has shown no sign of life for this long is taken to be abandoned.
STALE_AFTER = timedelta(minutes=5)


class UploadRejected(Exception):
    """An upload refused before anything was stored; the message is for the uploader."""


class IngestRetry(Exception):
    """A passing failure (the embedding server is down or slow); the task retries later."""


@dataclass(frozen=True)
class UploadOutcome:
    document: Document
    action: str  # "created", "new_version" or "duplicate"

    @property
    def message(self) -> str:
        if self.action == "duplicate":
            return f"Already present as “{self.document.title}” (v{self.document.version}); nothing to do."
        if self.action == "new_version":
            return f"Changed file: indexing version {self.document.version}."
        return "Queued for indexing."


def collection_create(*, name: str, description: str = "", is_public: bool = False) -> Collection:
    collection, _ = Collection.objects.get_or_create(
        name=name, defaults={"description": description, "is_public": is_public}
    )
    return collection


def _sha256(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    for block in iter(lambda: stream.read(1024 * 1024), b""):
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest()


def _title_from(filename: str) -> str:
    stem = PurePath(filename).stem.replace("_", " ").replace("-", " ").strip()
    return stem[:1].upper() + stem[1:] if stem else filename


@transaction.atomic
def document_upload(
    *,
    collection: Collection,
    file: File[Any],
    filename: str,
    uploaded_by: User | None = None,
    title: str | None = None,
    enqueue: bool = True,
) -> UploadOutcome:
    """Store an uploaded file and queue it for indexing (unless `enqueue` is False: the caller
    indexes it itself with `document_ingest`).

    Identical content already in the collection is not stored again; a different file under
    a name the collection already has becomes that document's next version.
    """
    filename = PurePath(filename).name[:255] or "upload"
    size = file.size or 0
    if size > settings.UPLOAD_MAX_BYTES:
        raise UploadRejected(
            f"{filename} is {size / 1e6:.1f} MB; the limit is {settings.UPLOAD_MAX_BYTES / 1e6:.0f} MB."
        )
    if size == 0:
        raise UploadRejected(f"{filename} is empty.")
    sha = _sha256(file)

    duplicate = Document.objects.filter(collection=collection, sha256=sha).first()
    if duplicate is not None:
        return UploadOutcome(duplicate, "duplicate")

    existing = Document.objects.select_for_update().filter(collection=collection, filename=filename).first()
    if existing is not None:
        old_file = existing.file.name
        existing.file.save(filename, file, save=False)
        existing.sha256 = sha
        existing.size_bytes = size
        existing.version += 1
        existing.status = Document.Status.PENDING
        existing.error = ""
        existing.progress = 0
        existing.attempts = 0
        existing.uploaded_by = uploaded_by
        existing.save()
        if old_file and old_file != existing.file.name:
            transaction.on_commit(lambda: existing.file.storage.delete(old_file))
        if enqueue:
            _enqueue_ingest(existing.pk)
        return UploadOutcome(existing, "new_version")

    document = Document(
        collection=collection,
        title=(title or _title_from(filename))[:300],
        filename=filename,
        size_bytes=size,
        sha256=sha,
        uploaded_by=uploaded_by,
    )
    document.file.save(filename, file, save=False)
    document.save()
    if enqueue:
        _enqueue_ingest(document.pk)
    return UploadOutcome(document, "created")


def _enqueue_ingest(document_id: int) -> None:
    from knowledge.tasks import ingest_document

    transaction.on_commit(lambda: ingest_document.delay(document_id))


@transaction.atomic
def document_reindex(*, document_ids: list[int]) -> list[int]:
    """Queue documents for indexing again; ones a worker is indexing right now are left alone."""
    ids = list(
        Document.objects.filter(pk__in=document_ids)
        .exclude(status=Document.Status.PROCESSING)
        .values_list("pk", flat=True)
    )
    Document.objects.filter(pk__in=ids).update(
        status=Document.Status.PENDING, progress=0, error="", attempts=0, heartbeat_at=None
    )
    for document_id in ids:
        _enqueue_ingest(document_id)
    return ids


def document_delete(*, document: Document) -> None:
    """Delete a document, its chunks (by cascade) and its stored file."""
    name = document.file.name
    storage = document.file.storage
    document.delete()
    if name:
        transaction.on_commit(lambda: storage.delete(name))


def _claim(document_id: int) -> bool:
    """Take the document for this worker; False when it is not ours to process.

    A conditional update, so two deliveries of the same task never both proceed. A document left
    "processing" by a worker that died (no heartbeat for STALE_AFTER) may be claimed again.
    """
    now = timezone.now()
    return bool(
        Document.objects.filter(pk=document_id)
        .filter(
            Q(status=Document.Status.PENDING)
            | Q(status=Document.Status.PROCESSING, heartbeat_at__lt=now - STALE_AFTER)
        )
        .update(
            status=Document.Status.PROCESSING,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            progress=0,
            error="",
        )
    )


def _fail(document_id: int, reason: str) -> None:
    Document.objects.filter(pk=document_id).update(
        status=Document.Status.FAILED, error=reason, progress=0, heartbeat_at=None
    )


def embedding_text(document: Document, draft: ChunkDraft) -> str:
    """What we embed for a chunk: its text with the document title and headings as context."""
    context = " › ".join([document.title, *draft.heading_path])
    return f"{context}\n\n{draft.text}"


def document_ingest(*, document_id: int) -> Document | None:
    """Parse, chunk and embed a document, then swap its chunks in one transaction.

    Returns None when the document was not ours to process (already done, or claimed by a live
    worker). A file we cannot read ends as failed with a readable reason; a passing provider
    failure raises IngestRetry after putting the document back to pending.
    """
    if not _claim(document_id):
        return None
    document = Document.objects.select_related("collection").get(pk=document_id)
    try:
        with document.file.open("rb") as handle:
            data = handle.read(settings.UPLOAD_MAX_BYTES + 1)
    except OSError:
        _fail(document_id, "The stored file is missing; upload it again.")
        return None
    if len(data) > settings.UPLOAD_MAX_BYTES:
        _fail(document_id, f"The file is larger than the {settings.UPLOAD_MAX_BYTES / 1e6:.0f} MB limit.")
        return None
    try:
        parsed = parse_document(data, document.filename)
    except ParseError as exc:
        _fail(document_id, str(exc))
        return None
    drafts = chunk_document(
        parsed, max_tokens=settings.CHUNK_MAX_TOKENS, overlap_tokens=settings.CHUNK_OVERLAP_TOKENS
    )
    if not drafts:
        _fail(document_id, "The file has no readable text.")
        return None

    vectors: list[list[float]] = []
    batch = settings.EMBEDDING_BATCH_SIZE
    try:
        for start in range(0, len(drafts), batch):
            texts = [embedding_text(document, d) for d in drafts[start : start + batch]]
            vectors.extend(provider.embed(texts, kind="passage").vectors)
            Document.objects.filter(pk=document_id).update(
                progress=min(99, round(100 * len(vectors) / len(drafts))), heartbeat_at=timezone.now()
            )
    except provider.ProviderError as exc:
        if exc.retryable:
            Document.objects.filter(pk=document_id).update(status=Document.Status.PENDING, heartbeat_at=None)
            raise IngestRetry(str(exc)) from exc
        _fail(document_id, f"Indexing failed: {exc}")
        return None

    with transaction.atomic():
        locked = Document.objects.select_for_update().get(pk=document_id)
        if locked.status != Document.Status.PROCESSING or locked.sha256 != document.sha256:
            return None  # replaced by a newer upload meanwhile; that version's task will index it
        Chunk.objects.filter(document_id=document_id).delete()
        Chunk.objects.bulk_create(
            [
                Chunk(
                    document_id=document_id,
                    collection_id=document.collection_id,
                    position=draft.position,
                    text=draft.text,
                    heading_path=list(draft.heading_path),
                    page=draft.page,
                    char_start=draft.char_start,
                    char_end=draft.char_end,
                    token_count=draft.token_count,
                    embedding=vector,
                )
                for draft, vector in zip(drafts, vectors, strict=True)
            ],
            batch_size=500,
        )
        locked.kind = parsed.kind.value
        if parsed.title and locked.title == _title_from(locked.filename):
            locked.title = parsed.title[:300]
        locked.page_count = parsed.page_count
        locked.token_count = sum(d.token_count for d in drafts)
        locked.chunk_count = len(drafts)
        locked.status = Document.Status.READY
        locked.progress = 100
        locked.error = ""
        locked.heartbeat_at = None
        locked.indexed_at = timezone.now()
        locked.save()
    return locked


def document_mark_failed(*, document_id: int, reason: str) -> None:
    _fail(document_id, reason)


def stalled_documents_requeue() -> list[int]:
    """Re-enqueue documents a dead worker abandoned, or whose enqueue was lost; returns their ids.

    Re-delivery is harmless: the ingest task claims the document before doing anything.
    """
    now = timezone.now()
    ids = list(
        Document.objects.filter(
            Q(status=Document.Status.PROCESSING, heartbeat_at__lt=now - STALE_AFTER)
            | Q(status=Document.Status.PENDING, updated_at__lt=now - 6 * STALE_AFTER)
        ).values_list("pk", flat=True)
    )
    # Touch them so the next sweep leaves pending ones alone while they wait in the queue.
    Document.objects.filter(pk__in=ids, status=Document.Status.PENDING).update(updated_at=now)
    for document_id in ids:
        _enqueue_ingest(document_id)
    return ids


# --- per-collection vector indexes ------------------------------------------------------------


@dataclass(frozen=True)
class CollectionIndexes:
    created: list[int]
    dropped: list[int]
    skipped: bool = False  # another sync was running


# Session-level advisory lock held by the one sync that may run at a time (class, key).
_SYNC_LOCK = (4243, 1)


def collection_indexes_sync() -> CollectionIndexes:
    """Give every large collection its own partial HNSW and GIN indexes; drop those no longer needed.

    pgvector filters after it walks the graph, so a reader of a few collections in a large table
    either over-fetches from the table's index (losing recall as the filter narrows) or scans
    every readable row. A collection's own index keeps its graph: at a million chunks a 5%
    collection searched through it has the recall of a small table (bench/search_scale.py).
    An index is created at KNOWLEDGE_COLLECTION_INDEX_MIN_CHUNKS chunks and dropped below half
    of that, or when its collection is gone. Runs from beat; outside a transaction the index is
    built CONCURRENTLY, so uploads and searches go on meanwhile.

    One sync runs at a time (an advisory lock; a second one returns at once, skipped): an index
    still being built is invalid too, and a second sync would otherwise take it for a failed
    build and drop it. The lock goes with the database session if the worker dies.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", list(_SYNC_LOCK))
        (locked,) = cursor.fetchone()
    if not locked:
        logger.info("collection indexes: another sync is running")
        return CollectionIndexes(created=[], dropped=[], skipped=True)
    try:
        return _collection_indexes_sync()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", list(_SYNC_LOCK))


def _collection_indexes_sync() -> CollectionIndexes:
    threshold = settings.KNOWLEDGE_COLLECTION_INDEX_MIN_CHUNKS
    sizes = dict(
        Document.objects.filter(status=Document.Status.READY)
        .values("collection_id")
        .annotate(total=Sum("chunk_count"))
        .values_list("collection_id", "total")
    )
    existing = collection_indexes()
    created: list[int] = []
    dropped: list[int] = []
    for collection_id, valid in sorted(existing.items()):
        if not valid or (sizes.get(collection_id) or 0) < threshold // 2:
            collection_index_drop(collection_id=collection_id)  # invalid: a failed concurrent build
            dropped.append(collection_id)
            existing.pop(collection_id)
    for collection_id, chunks in sorted(sizes.items()):
        if collection_id in existing or (chunks or 0) < threshold:
            continue
        logger.info("building the indexes of collection %s (%s chunks)", collection_id, chunks)
        collection_index_create(collection_id=collection_id)
        created.append(int(collection_id))
    return CollectionIndexes(created=created, dropped=dropped)


def _concurrently() -> str:
    # CONCURRENTLY cannot run inside a transaction block (tests run in one).
    return "" if connection.in_atomic_block else "CONCURRENTLY "


def collection_index_create(*, collection_id: int) -> None:
    """The partial indexes of one collection: its HNSW graph, built as the table's own, and a GIN
    index of its words (the keyword side looks each word up there, knowledge.selectors)."""
    cid = int(collection_id)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE INDEX {_concurrently()}IF NOT EXISTS {COLLECTION_INDEX_PREFIX}{cid} ON knowledge_chunk "
            f"USING hnsw (embedding vector_cosine_ops) WITH (m = {HNSW_M}, "
            f"ef_construction = {HNSW_EF_CONSTRUCTION}) WHERE collection_id = {cid}"
        )
        cursor.execute(
            f"CREATE INDEX {_concurrently()}IF NOT EXISTS {COLLECTION_TEXT_INDEX_PREFIX}{cid} "
            f"ON knowledge_chunk USING gin (search_vector) WHERE collection_id = {cid}"
        )


def collection_index_drop(*, collection_id: int) -> None:
    with connection.cursor() as cursor:
        for prefix in COLLECTION_INDEX_PREFIXES:
            cursor.execute(f"DROP INDEX {_concurrently()}IF EXISTS {prefix}{int(collection_id)}")
