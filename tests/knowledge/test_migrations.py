"""Schema migrations of the knowledge app: what they do to rows and indexes already there."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from knowledge.indexes import collection_index_create
from knowledge.selectors import COLLECTION_INDEX_PREFIXES, COLLECTION_TEXT_INDEX_PREFIX
from tests import factories

BEFORE = ("knowledge", "0006_document_collection_chunks")
CJK_PAIRS = ("knowledge", "0007_search_vector_cjk_pairs")


def _migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


@pytest.fixture
def back_to_latest() -> Iterator[None]:
    """Whatever the test leaves behind, the schema ends at the latest migration again, without
    the collections' own indexes: the rows are flushed after a transactional test, but an index
    is not, and a later `collection_indexes_sync` would find it and drop it as a stray."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'knowledge_chunk' AND "
            "(indexname LIKE %s OR indexname LIKE %s)",
            [prefix.replace("_", "\\_") + "%" for prefix in COLLECTION_INDEX_PREFIXES],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f"DROP INDEX IF EXISTS {name}")


def _lexemes(chunk_id: int) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tsvector_to_array(search_vector) FROM knowledge_chunk WHERE id = %s", [chunk_id]
        )
        return list(cursor.fetchone()[0])


def _chunk_indexes() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'knowledge_chunk'")
        return {name for (name,) in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("back_to_latest")
def test_cjk_pairs_rebuild_the_index_of_existing_chunks_and_keep_collection_indexes() -> None:
    from knowledge.models import Chunk

    collection = factories.collection(name="Mixed")
    factories.document(collection=collection, text="臺北是中華民國的首都。", filename="zh.txt")
    factories.document(collection=collection, text="Annual leave is paid.", filename="en.txt")
    collection_index_create(collection_id=collection.pk)
    chinese = Chunk.objects.get(document__filename="zh.txt").pk
    english = Chunk.objects.get(document__filename="en.txt").pk
    english_lexemes = _lexemes(english)

    _migrate(BEFORE)

    # Before: the parser's one word per clause.
    assert _lexemes(chinese) == ["臺北是中華民國的首都"]
    assert f"{COLLECTION_TEXT_INDEX_PREFIX}{collection.pk}" in _chunk_indexes()

    _migrate(CJK_PAIRS)

    assert {"臺北", "中華", "華民", "民國", "首都"} <= set(_lexemes(chinese))
    assert "臺北是中華民國的首都" not in _lexemes(chinese)
    assert _lexemes(english) == english_lexemes
    indexes = _chunk_indexes()
    assert {"chunk_search_gin", f"{COLLECTION_TEXT_INDEX_PREFIX}{collection.pk}"} <= indexes
    with connection.cursor() as cursor:  # the collection's own GIN index is still partial
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s",
            [f"{COLLECTION_TEXT_INDEX_PREFIX}{collection.pk}"],
        )
        definition: Any = cursor.fetchone()[0]
    assert f"WHERE (collection_id = {collection.pk})" in definition and "search_vector" in definition
