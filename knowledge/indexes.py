"""Each large collection's own partial indexes (HNSW and GIN): created, dropped, kept in step by beat."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import Sum

from knowledge.models import HNSW_EF_CONSTRUCTION, HNSW_M, Document
from knowledge.selectors import (
    COLLECTION_INDEX_PREFIX,
    COLLECTION_INDEX_PREFIXES,
    COLLECTION_TEXT_INDEX_PREFIX,
    collection_indexes,
)

logger = logging.getLogger(__name__)


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
