"""Writes for the knowledge app: collections, uploads, the ingestion pipeline, deletion."""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import PurePath
from typing import IO, Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import File
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from gateway import provider
from knowledge.chunking import ChunkDraft, chunk_document
from knowledge.models import Chunk, Collection, Document
from knowledge.parsing import ParsedDocument, ParseError, parse_document

logger = logging.getLogger(__name__)

# A document whose worker has shown no sign of life for this long is taken to be abandoned.
STALE_AFTER = timedelta(minutes=5)


class UploadRejected(Exception):
    """An upload refused before anything was stored; the message is for the uploader."""


class IngestRetry(Exception):
    """A passing failure (the embedding server is down or slow); the task retries later.

    `document_ids`: the documents put back to pending, which the retry must index.
    """

    def __init__(self, message: str, *, document_ids: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.document_ids = list(document_ids)


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


# --- ingestion ----------------------------------------------------------------------------------
#
# The embedding server is the bottleneck, and it is much faster per text on full batches: the
# local e5 embedded short passages 2.4x faster per text in batches of 16 than one at a time.
# Indexed one by one, small documents (a chunk or two each) sent 1.5 texts a request and ran at
# 0.51x the server's speed (bench/ingest_throughput.py --docs short-passages). So the task of a
# small document takes other small pending documents along (`documents_ingest`): their chunks
# are embedded in shared batches, and each document is still parsed, failed and written on its
# own.

# Room in one task for about this many full embedding requests' worth of text; the companions'
# stored bytes stand in for their text (exact for text files, generous for PDF and Word).
GROUP_BATCHES = 4
# Bytes of text per token, a generous average (English is ~4, CJK in UTF-8 ~3 per token).
_BYTES_PER_TOKEN = 4


_UNEXPECTED = "Indexing failed on an unexpected error (it is in the worker's log); try again later."


def group_limits() -> tuple[int, int]:
    """(most documents, most stored bytes) one ingest task takes on."""
    batch = settings.EMBEDDING_BATCH_SIZE
    return GROUP_BATCHES * batch, GROUP_BATCHES * batch * settings.CHUNK_MAX_TOKENS * _BYTES_PER_TOKEN


@dataclass(frozen=True)
class IngestOutcome:
    """What one ingest run did, by document id."""

    ready: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    # Not ours to process (already done, claimed by a live worker, or replaced meanwhile).
    skipped: list[int] = field(default_factory=list)

    @property
    def summary(self) -> str:
        if not self.ready and not self.failed:
            return "skipped"
        parts = [f"{len(self.ready)} ready"] if self.ready else []
        parts += [f"{len(self.failed)} failed"] if self.failed else []
        return ", ".join(parts)


@dataclass(eq=False)  # compared and hashed by identity: one per claimed document
class _Work:
    """One claimed document on its way through the pipeline."""

    document: Document
    parsed: ParsedDocument
    drafts: list[ChunkDraft]
    texts: list[str]
    vectors: list[list[float]] = field(default_factory=list)
    failed: bool = False

    @property
    def complete(self) -> bool:
        return len(self.vectors) == len(self.drafts)


def _companions_claim(*, room_bytes: int, room_documents: int) -> list[int]:
    """Claim the oldest pending documents that fit in the room left, skipping any row another
    worker is claiming this instant; returns their ids in claim order."""
    if room_documents <= 0 or room_bytes <= 0:
        return []
    with transaction.atomic():
        candidates = (
            Document.objects.select_for_update(skip_locked=True)
            .filter(status=Document.Status.PENDING, size_bytes__lte=room_bytes)
            .order_by("pk")
            .values_list("pk", "size_bytes")[:room_documents]
        )
        ids: list[int] = []
        for pk, size in candidates:
            if size <= room_bytes:  # one that no longer fits is left to its own task
                ids.append(pk)
                room_bytes -= size
        # The rows are locked by us and were pending when locked, so every one of them changes.
        Document.objects.filter(pk__in=ids).update(
            status=Document.Status.PROCESSING,
            heartbeat_at=timezone.now(),
            attempts=F("attempts") + 1,
            progress=0,
            error="",
        )
    return ids


def documents_ingest(*, document_id: int, retry_ids: Sequence[int] = ()) -> IngestOutcome:
    """Index a document and, when it is small, other small pending documents with it.

    What an ingest task runs. The document (and `retry_ids`: documents an earlier attempt of the
    same task took along and put back after a passing failure) is claimed as `document_ingest`
    claims it; nothing of ours claimed means nothing to do (a second delivery, or a companion of
    another task). Then, while they fit in `group_limits()`, the oldest pending documents are
    claimed too. Each document is parsed on its own, its chunks embedded in batches shared with
    the others, and written in its own transaction as soon as its last chunk is embedded: one
    corrupt file fails alone, and a document is never half-indexed.

    A passing provider failure puts every claimed document not yet written back to pending and
    raises IngestRetry carrying their ids.
    """
    own = [pk for pk in dict.fromkeys([document_id, *retry_ids]) if _claim(pk)]
    if not own:
        return IngestOutcome(skipped=[document_id])
    most_documents, most_bytes = group_limits()
    used = sum(Document.objects.filter(pk__in=own).values_list("size_bytes", flat=True))
    companions = _companions_claim(room_bytes=most_bytes - used, room_documents=most_documents - len(own))
    return _ingest_claimed([*own, *companions])


def document_ingest(*, document_id: int) -> Document | None:
    """Parse, chunk and embed one document, then swap its chunks in one transaction.

    Returns None when the document was not ours to process (already done, or claimed by a live
    worker) or could not be indexed. A file we cannot read ends as failed with a readable reason;
    a passing provider failure raises IngestRetry after putting the document back to pending.
    """
    if not _claim(document_id):
        return None
    outcome = _ingest_claimed([document_id])
    if document_id not in outcome.ready:
        return None
    return Document.objects.get(pk=document_id)


def _ingest_claimed(document_ids: list[int]) -> IngestOutcome:
    """The pipeline for documents this worker has claimed (see `documents_ingest`)."""
    outcome = IngestOutcome()
    by_pk = Document.objects.in_bulk(document_ids)
    work: list[_Work] = []
    for document_id in document_ids:
        document = by_pk.get(document_id)
        if document is None:  # deleted since the claim
            outcome.skipped.append(document_id)
            continue
        try:
            prepared = _prepare(document)
        except SoftTimeLimitExceeded:
            raise  # the task's time is up: stop, and let the stale heartbeats requeue the rest
        except Exception:
            # Isolation: an unforeseen error in one file must not fail the documents beside it.
            logger.exception("Unexpected failure preparing document %s", document_id)
            prepared = _UNEXPECTED
        if isinstance(prepared, str):
            _fail(document_id, prepared)
            outcome.failed.append(document_id)
        else:
            work.append(prepared)

    queue = deque((item, index) for item in work for index in range(len(item.drafts)))
    try:
        while queue:
            batch: list[tuple[_Work, int]] = []
            while queue and len(batch) < settings.EMBEDDING_BATCH_SIZE:
                item, index = queue.popleft()
                if not item.failed:
                    batch.append((item, index))
            if not batch:
                break
            _embed_batch(batch, outcome)
            for item in dict.fromkeys(item for item, _ in batch):
                if item.complete and not item.failed:
                    _store_isolated(item, outcome)
            _heartbeat([item for item in work if not item.failed and not item.complete])
    except provider.ProviderError as exc:  # passing (_embed_batch fails documents on the others)
        unfinished = [item for item in work if not item.failed and not item.complete]
        for item in unfinished:
            Document.objects.filter(
                pk=item.document.pk, status=Document.Status.PROCESSING, sha256=item.document.sha256
            ).update(status=Document.Status.PENDING, heartbeat_at=None)
        raise IngestRetry(str(exc), document_ids=[item.document.pk for item in unfinished]) from exc
    return outcome


def _prepare(document: Document) -> _Work | str:
    """Read, parse and chunk a claimed document; a string is the reason it cannot be indexed."""
    try:
        with document.file.open("rb") as handle:
            data = handle.read(settings.UPLOAD_MAX_BYTES + 1)
    except OSError:
        return "The stored file is missing; upload it again."
    if len(data) > settings.UPLOAD_MAX_BYTES:
        return f"The file is larger than the {settings.UPLOAD_MAX_BYTES / 1e6:.0f} MB limit."
    try:
        parsed = parse_document(data, document.filename)
    except ParseError as exc:
        return str(exc)
    drafts = chunk_document(
        parsed, max_tokens=settings.CHUNK_MAX_TOKENS, overlap_tokens=settings.CHUNK_OVERLAP_TOKENS
    )
    if not drafts:
        return "The file has no readable text."
    return _Work(document, parsed, drafts, [embedding_text(document, d) for d in drafts])


def _embed_batch(batch: list[tuple[_Work, int]], outcome: IngestOutcome) -> None:
    """Embed one shared batch and hand each document its vectors.

    A request the provider refuses for good (a text too long, say) is sent again per document,
    so only the document that causes it fails. A passing failure is raised to the caller.
    """
    texts = [item.texts[index] for item, index in batch]
    try:
        vectors = provider.embed(texts, kind="passage").vectors
    except provider.ProviderError as exc:
        if exc.retryable:
            raise
        items = list(dict.fromkeys(item for item, _ in batch))
        if len(items) == 1:
            _fail_work(items[0], exc, outcome)
            return
        for item in items:
            _embed_batch([(i, index) for i, index in batch if i is item], outcome)
        return
    for (item, _), vector in zip(batch, vectors, strict=True):
        item.vectors.append(vector)


def _fail_work(item: _Work, exc: provider.ProviderError, outcome: IngestOutcome) -> None:
    item.failed = True
    _fail(item.document.pk, f"Indexing failed: {exc}")
    outcome.failed.append(item.document.pk)


def _heartbeat(items: list[_Work]) -> None:
    """Show the documents still in flight as alive, with each one's share of chunks embedded."""
    if not items:
        return
    now = timezone.now()
    waiting = [item.document.pk for item in items if not item.vectors]
    if waiting:
        Document.objects.filter(pk__in=waiting).update(heartbeat_at=now)
    for item in items:
        if item.vectors:
            Document.objects.filter(pk=item.document.pk).update(
                progress=min(99, round(100 * len(item.vectors) / len(item.drafts))), heartbeat_at=now
            )


def _store_isolated(item: _Work, outcome: IngestOutcome) -> None:
    """`_store`, where an unforeseen error fails this document only (its transaction rolled back).
    If the database itself is gone, marking the failure raises too, and the task fails whole."""
    try:
        stored = _store(item)
    except SoftTimeLimitExceeded:
        raise
    except Exception:
        logger.exception("Unexpected failure storing document %s", item.document.pk)
        item.failed = True
        _fail(item.document.pk, _UNEXPECTED)
        outcome.failed.append(item.document.pk)
        return
    (outcome.ready if stored else outcome.skipped).append(item.document.pk)


def _store(item: _Work) -> Document | None:
    """Swap the document's chunks for the new ones and mark it ready, in one transaction; None
    when it was replaced by a newer upload or deleted meanwhile (that version's task indexes it)."""
    document, drafts, parsed = item.document, item.drafts, item.parsed
    with transaction.atomic():
        locked = Document.objects.select_for_update().filter(pk=document.pk).first()
        if locked is None or locked.status != Document.Status.PROCESSING or locked.sha256 != document.sha256:
            return None
        Chunk.objects.filter(document_id=document.pk).delete()
        Chunk.objects.bulk_create(
            [
                Chunk(
                    document_id=document.pk,
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
                for draft, vector in zip(drafts, item.vectors, strict=True)
            ],
            batch_size=500,
        )
        locked.kind = parsed.kind.value
        if parsed.title and locked.title == _title_from(locked.filename):
            locked.title = parsed.title[:300]
        locked.page_count = parsed.page_count
        locked.parse_notes = list(parsed.notes)  # this version's own; a re-index replaces them
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
