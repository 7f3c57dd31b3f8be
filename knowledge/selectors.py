"""Reads for the knowledge app, above all `search`: hybrid retrieval under the reader's permissions.

The keyword side (full-text SQL, lexeme statistics, BM25) is `knowledge.keywords`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache

from django.db import connection, transaction
from django.db.models import Q, QuerySet

from common.users import AnyUser
from gateway import provider
from knowledge.keywords import KeywordSides, keyword_sides
from knowledge.models import Chunk, Collection, Document

# Fusion: a chunk scores its cosine similarity to the question, plus KEYWORD_WEIGHT times the
# share of the question's informative words (by IDF) it holds, plus EVERY_WORD_BONUS when it
# holds every word (see `fuse`). Chosen on SQuAD 2.0, COVID-QA and DRCD together, never worse
# than plain dense search on any of them; reciprocal-rank fusion (k 5 or 60) fell below it on
# sets where the keyword side is weak (bench/retrieval_quality.py; docs/benchmarks-knowledge.md,
# "Fusion that holds beyond its tuning sets").
KEYWORD_WEIGHT = 0.1
EVERY_WORD_BONUS = 0.02
# Up to this many readable chunks a filtered query compares the query with every one of them:
# perfect recall, no HNSW quirks (pgvector 0.6's scan loses rows under selective filters), and
# ~2.5 µs a row with the vectors stored in the row (bench/search_scale.py), so ~25 ms at the limit.
EXACT_SCAN_MAX_ROWS = 10_000
# Above it, on pgvector < 0.8, the index is asked for enough neighbours that about this many of
# them fall inside the filter; ef_search is kept between these bounds (latency grows with it).
FILTERED_MIN_CANDIDATES = 40
OVERFETCH_EF_SEARCH = (100, 1000)
HNSW_MAX_EF_SEARCH = 1000


@dataclass(frozen=True)
class SearchHit:
    chunk: Chunk
    score: float  # fused score (`fuse`): cosine similarity plus the keyword side's bonus
    vector_score: float | None = None  # cosine similarity
    # ts_rank_cd for chunks holding every word of the question (ranked first), BM25 for the rest
    keyword_score: float | None = None
    vector_rank: int | None = None
    keyword_rank: int | None = None

    @property
    def document(self) -> Document:
        return self.chunk.document

    @property
    def heading_path(self) -> list[str]:
        return list(self.chunk.heading_path)

    @property
    def page(self) -> int | None:
        return self.chunk.page


@dataclass
class _Fused:
    score: float = 0.0
    vector_score: float | None = None
    keyword_score: float | None = None
    vector_rank: int | None = None
    keyword_rank: int | None = None


@dataclass
class SearchPlan:
    """How the vector side ran; recorded for the retrieval page and the benchmarks."""

    collection_ids: list[int]
    filtered: bool
    readable_rows: int | None = None
    rows_by_collection: dict[int, int] = field(default_factory=dict)  # filtered plans only
    table_rows: int = 0  # PostgreSQL's estimate for the whole table
    indexed_split: tuple[list[int], list[int]] | None = None  # see _indexed_split
    strategy: str = ""
    ef_search: int | None = None
    notes: list[str] = field(default_factory=list)


@cache
def _readable_sql() -> str:
    """`Collection.objects.readable_by` as one statement (see `readable_collection_ids`)."""
    from django.contrib.auth import get_user_model

    collections = Collection._meta.db_table
    readers = Collection.reader_users.through._meta.db_table
    groups = Collection.reader_groups.through._meta.db_table
    members = get_user_model().groups.through._meta.db_table
    return (
        f"SELECT c.id FROM {collections} c WHERE (%(everything)s OR c.is_public "  # noqa: S608
        f"OR EXISTS (SELECT 1 FROM {readers} r WHERE r.collection_id = c.id AND r.user_id = %(user)s) "
        f"OR EXISTS (SELECT 1 FROM {groups} g JOIN {members} m ON m.group_id = g.group_id "
        "WHERE g.collection_id = c.id AND m.user_id = %(user)s)) "
        "AND (%(any)s OR c.id = ANY(%(ids)s) OR c.name = ANY(%(names)s)) ORDER BY c.id"
    )


# `object`, not AnyUser, until answer_cache's three signatures that pass a user through are typed
# (that module is being rewritten on another branch); anything without is_authenticated reads
# only public collections.
def readable_collection_ids(user: object, collections: Iterable[int | str] | None = None) -> list[int]:
    """Ids of the collections `user` may read, narrowed to `collections` (ids or names) if given.

    The rule is `Collection.objects.readable_by`'s, in one SQL statement: every question asks
    it before anything else, and the queryset took 2.6 ms to build and read where the statement
    takes 0.7 (tests/knowledge/test_permissions.py holds the two to the same answers).
    """
    signed_in = bool(getattr(user, "is_authenticated", False))
    wanted = list(collections) if collections is not None else []
    params = {
        "everything": signed_in and bool(getattr(user, "is_superuser", False)),
        "user": getattr(user, "pk", None) if signed_in else None,
        "any": collections is None,
        "ids": [c for c in wanted if isinstance(c, int)],
        "names": [c for c in wanted if isinstance(c, str)],
    }
    with connection.cursor() as cursor:
        cursor.execute(_readable_sql(), params)
        return [int(pk) for (pk,) in cursor.fetchall()]


@cache
def pgvector_version() -> tuple[int, ...]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    return tuple(int(part) for part in row[0].split(".")) if row else (0,)


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def _vector_candidates(vector: Sequence[float], plan: SearchPlan, limit: int) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity) best first, within the plan's collections."""
    literal = _vector_literal(vector)
    with connection.cursor() as cursor:
        if plan.readable_rows is not None and plan.readable_rows <= EXACT_SCAN_MAX_ROWS:
            # Few enough rows to compare them all: perfect recall, and no HNSW quirks (an index
            # scan also returns fewer rows while it still holds entries of deleted chunks).
            # OFFSET 0 fences the subquery, which keeps the planner off the HNSW index and
            # computes each distance once.
            plan.strategy = "exact"
            cursor.execute(
                "SELECT id, 1 - distance FROM (SELECT id, embedding <=> %s::vector AS distance "
                "FROM knowledge_chunk WHERE collection_id = ANY(%s) OFFSET 0) AS scored "
                "ORDER BY distance LIMIT %s",
                [literal, plan.collection_ids, limit],
            )
            return cursor.fetchall()

        if not plan.filtered:
            # A larger graph needs a longer candidate list for the same recall: at 1M synthetic
            # chunks ef_search 100 found 0.96 of the true top 10, 200 found 0.98, 500 0.99
            # (bench/search_scale.py, on another query set 0.95 at 200), so 500 there.
            rows = plan.readable_rows or 0
            plan.strategy, plan.ef_search = "hnsw", max(100, limit, min(HNSW_MAX_EF_SEARCH, rows // 2000))
            cursor.execute(f"SET LOCAL hnsw.ef_search = {plan.ef_search}")
            cursor.execute(
                "SELECT id, 1 - (embedding <=> %s::vector) FROM knowledge_chunk "
                "ORDER BY embedding <=> %s::vector LIMIT %s",
                [literal, literal, limit],
            )
            return cursor.fetchall()

        split = plan.indexed_split
        if split is not None:
            indexed, rest = split
            largest = max(plan.rows_by_collection[c] for c in indexed)
            plan.strategy = "hnsw-per-collection"
            plan.ef_search = max(100, limit, min(HNSW_MAX_EF_SEARCH, largest // 2000))
            cursor.execute(f"SET LOCAL hnsw.ef_search = {plan.ef_search}")
            cursor.execute(_per_collection_sql(indexed, rest), {"v": literal, "rest": rest, "limit": limit})
            return cursor.fetchall()

        total = plan.table_rows
        selectivity = max((plan.readable_rows or total) / max(total, 1), 1e-4)
        if pgvector_version() >= (0, 8):
            plan.strategy, plan.ef_search = "hnsw-iterative", max(100, limit)
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor.execute(f"SET LOCAL hnsw.ef_search = {plan.ef_search}")
            cursor.execute(
                "SELECT id, similarity FROM (SELECT id, 1 - (embedding <=> %s::vector) AS similarity "
                "FROM knowledge_chunk WHERE collection_id = ANY(%s) "
                "ORDER BY embedding <=> %s::vector LIMIT %s) AS hits ORDER BY similarity DESC",
                [literal, plan.collection_ids, literal, limit],
            )
            return cursor.fetchall()

        # pgvector < 0.8: over-fetch from the index in proportion to how selective the filter is.
        low, high = OVERFETCH_EF_SEARCH
        fetch = min(max(int(math.ceil(FILTERED_MIN_CANDIDATES / selectivity)), low, limit), high)
        plan.strategy, plan.ef_search = "hnsw-overfetch", fetch
        cursor.execute(f"SET LOCAL hnsw.ef_search = {plan.ef_search}")
        cursor.execute(
            "SELECT id, similarity FROM (SELECT id, collection_id, "
            "1 - (embedding <=> %s::vector) AS similarity "
            "FROM knowledge_chunk ORDER BY embedding <=> %s::vector LIMIT %s) AS near "
            "WHERE collection_id = ANY(%s) ORDER BY similarity DESC LIMIT %s",
            [literal, literal, fetch, plan.collection_ids, limit],
        )
        return cursor.fetchall()


def _indexed_split(plan: SearchPlan) -> tuple[list[int], list[int]] | None:
    """(indexed, rest) when a filtered reader is best searched collection by collection: at most
    COLLECTION_INDEX_MAX_SCANS of its collections have their own indexes, and the rest hold at
    most EXACT_SCAN_MAX_ROWS chunks. None otherwise."""
    if not plan.filtered:
        return None
    indexed = sorted(c for c in collections_with_index() if plan.rows_by_collection.get(c))
    rest = [c for c in plan.collection_ids if c not in indexed]
    rest_rows = sum(plan.rows_by_collection.get(c, 0) for c in rest)
    if indexed and len(indexed) <= COLLECTION_INDEX_MAX_SCANS and rest_rows <= EXACT_SCAN_MAX_ROWS:
        return indexed, rest
    return None


def _plan(ids: list[int]) -> SearchPlan:
    """Whether `ids` leave any collection out, and how many chunks they hold, in one statement.

    `ids` come from `readable_collection_ids`, so they name existing collections and the reader
    is unfiltered exactly when there are as many as there are collections. An unfiltered reader
    of a large table gets PostgreSQL's row estimate rather than a sum over every document; a
    filtered one gets the chunks of each collection.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.n, CASE WHEN c.n = %(n)s AND t.rows > %(exact)s THEN NULL ELSE "
            "(SELECT COALESCE(json_object_agg(collection_id, chunks), '{}') FROM "
            "(SELECT collection_id, sum(chunk_count) AS chunks FROM knowledge_document "
            "WHERE collection_id = ANY(%(ids)s) GROUP BY collection_id) AS sizes) END, t.rows "
            "FROM (SELECT count(*) AS n FROM knowledge_collection) AS c, "
            "(SELECT reltuples::bigint AS rows FROM pg_class WHERE oid = 'knowledge_chunk'::regclass) AS t",
            {"n": len(set(ids)), "exact": EXACT_SCAN_MAX_ROWS, "ids": list(ids)},
        )
        collections, sizes, estimate = cursor.fetchone()
    plan = SearchPlan(
        collection_ids=ids, filtered=len(set(ids)) != collections, table_rows=max(int(estimate), 0)
    )
    if sizes is None:
        plan.readable_rows = int(estimate)
    else:
        plan.rows_by_collection = {int(key): int(value) for key, value in sizes.items()}
        plan.readable_rows = sum(plan.rows_by_collection.values())
    plan.indexed_split = _indexed_split(plan)  # both sides of a search read it
    return plan


# Collections with their own partial indexes (knowledge.indexes.collection_indexes_sync), read
# from the catalogue at most once a minute per process.
_COLLECTION_INDEX_SECONDS = 60.0
_collection_indexes: tuple[float, frozenset[int]] = (-math.inf, frozenset())
# A reader of more indexed collections than this searches the table's indexes instead.
COLLECTION_INDEX_MAX_SCANS = 4


# A large collection gets two partial indexes: an HNSW graph of its own, and a GIN index of its
# words, so that the keyword side looks a word up in that collection alone (knowledge.services).
COLLECTION_INDEX_PREFIX = "chunk_hnsw_collection_"
COLLECTION_TEXT_INDEX_PREFIX = "chunk_gin_collection_"
COLLECTION_INDEX_PREFIXES = (COLLECTION_INDEX_PREFIX, COLLECTION_TEXT_INDEX_PREFIX)


def collection_indexes() -> dict[int, bool]:
    """Collections that have partial indexes of their own, each with whether both are there and
    valid (a failed CREATE INDEX CONCURRENTLY leaves an invalid one behind)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'knowledge_chunk'::regclass AND (c.relname LIKE %s OR c.relname LIKE %s)",
            [prefix + "%" for prefix in COLLECTION_INDEX_PREFIXES],
        )
        rows = cursor.fetchall()
    kinds: dict[int, dict[str, bool]] = {}
    for name, valid in rows:
        prefix = next(p for p in COLLECTION_INDEX_PREFIXES if name.startswith(p))
        kinds.setdefault(int(name.removeprefix(prefix)), {})[prefix] = bool(valid)
    return {
        collection_id: len(found) == len(COLLECTION_INDEX_PREFIXES) and all(found.values())
        for collection_id, found in kinds.items()
    }


def collections_with_index() -> frozenset[int]:
    """The collections a search may walk by their own index (read at most once a minute)."""
    global _collection_indexes
    fetched_at, ids = _collection_indexes
    if time.monotonic() - fetched_at < _COLLECTION_INDEX_SECONDS:
        return ids
    ids = frozenset(collection_id for collection_id, valid in collection_indexes().items() if valid)
    _collection_indexes = (time.monotonic(), ids)
    return ids


def _per_collection_sql(indexed: list[int], rest: list[int]) -> str:
    """One branch per indexed collection, each ordered by its own partial index, plus an exact
    scan of the small rest; the branches' nearest are merged.

    Collection ids are written into the SQL as integers (they come from our own tables): the
    planner matches a partial index's predicate only against a constant.
    """
    branches = [
        "(SELECT id, embedding <=> %(v)s::vector AS distance FROM knowledge_chunk "  # noqa: S608
        f"WHERE collection_id = {int(cid)} ORDER BY embedding <=> %(v)s::vector LIMIT %(limit)s)"
        for cid in indexed
    ]
    if rest:
        branches.append(
            "(SELECT id, distance FROM (SELECT id, embedding <=> %(v)s::vector AS distance "
            "FROM knowledge_chunk WHERE collection_id = ANY(%(rest)s) OFFSET 0) AS small "
            "ORDER BY distance LIMIT %(limit)s)"
        )
    union = " UNION ALL ".join(branches)
    return f"SELECT id, 1 - distance FROM ({union}) AS near ORDER BY distance LIMIT %(limit)s"  # noqa: S608


def fuse(vector_hits: Sequence[tuple[int, float]], sides: KeywordSides, limit: int) -> dict[int, _Fused]:
    """Both sides' candidates with their fused scores.

    A chunk scores its cosine similarity, plus KEYWORD_WEIGHT times its share of the question
    (`KeywordSides.coverage`), plus EVERY_WORD_BONUS when it holds every word. A keyword match
    the vector side did not return is given the lowest similarity the vector side did return
    (it is at most that similar). So each side counts by how sure it is for this question: a
    keyword match holding one common word of five moves a chunk by a fraction of the keyword
    weight, while reciprocal-rank fusion gives the keyword side's first chunk as much as the
    vector side's first whatever they matched; and a chunk far ahead on cosine stays ahead of
    a weak keyword match. Scores of a keyword-only search start from 0.
    """
    fused: dict[int, _Fused] = {}
    for rank, (chunk_id, similarity) in enumerate(vector_hits, start=1):
        fused[chunk_id] = _Fused(float(similarity), float(similarity), vector_rank=rank)
    floor = float(vector_hits[-1][1]) if vector_hits else 0.0
    coverage = sides.coverage()
    every_word = {chunk_id for chunk_id, _ in sides.every_word}
    for rank, (chunk_id, keyword_score) in enumerate(sides.merged(limit), start=1):
        entry = fused.setdefault(chunk_id, _Fused(floor))
        entry.score += KEYWORD_WEIGHT * coverage.get(chunk_id, 0.0)
        entry.score += EVERY_WORD_BONUS if chunk_id in every_word else 0.0
        entry.keyword_score, entry.keyword_rank = float(keyword_score), rank
    return fused


def ranked(fused: dict[int, _Fused]) -> list[tuple[int, _Fused]]:
    """`fuse`'s candidates best first; ties (a keyword-only search of common words) keep the
    keyword side's order."""
    return sorted(fused.items(), key=lambda item: (-item[1].score, item[1].keyword_rank or math.inf, item[0]))


def search(
    user: AnyUser,
    query: str,
    k: int = 8,
    collections: Iterable[int | str] | None = None,
    *,
    query_vector: Sequence[float] | None = None,
    mode: str = "hybrid",
    plan_out: list[SearchPlan] | None = None,
    readable_ids: Sequence[int] | None = None,
) -> list[SearchHit]:
    """The chunks `user` may read that best answer `query`, best first.

    Vector nearest neighbours and full-text matches, fused by `fuse`. `mode` is
    "hybrid", "vector" or "keyword" (the single methods exist for evaluation). The permission
    filter is part of every SQL statement: rows of other collections are never read back.
    `readable_ids` is `readable_collection_ids(user, collections)` when the caller already has
    it (the answer pipeline computes it once per turn).
    """
    query = query.strip()
    ids = list(readable_ids) if readable_ids is not None else readable_collection_ids(user, collections)
    if not query or not ids or k <= 0:
        return []
    plan = _plan(ids)
    pool = max(k * 4, 40)

    vector_hits: list[tuple[int, float]] = []
    sides = KeywordSides([], [], [])
    with transaction.atomic():  # SET LOCAL lasts until the end of this transaction
        if mode in {"hybrid", "vector"}:
            if query_vector is None:
                query_vector = provider.embed([query], kind="query").vectors[0]
            vector_hits = _vector_candidates(query_vector, plan, pool)
        if mode in {"hybrid", "keyword"}:
            sides = keyword_sides(query, plan, pool)
    if plan_out is not None:
        plan_out.append(plan)

    best = ranked(fuse(vector_hits, sides, pool))[:k]
    chunks = (
        Chunk.objects.select_related("document", "document__collection")
        .defer("embedding", "search_vector")  # parsing 384 floats per hit is for nobody here
        .in_bulk([cid for cid, _ in best])
    )
    return [
        SearchHit(
            chunk=chunks[chunk_id],
            score=entry.score,
            vector_score=entry.vector_score,
            keyword_score=entry.keyword_score,
            vector_rank=entry.vector_rank,
            keyword_rank=entry.keyword_rank,
        )
        for chunk_id, entry in best
        if chunk_id in chunks  # a chunk deleted between the two queries is dropped
    ]


def chunks_readable_by(user: AnyUser | None) -> QuerySet[Chunk]:
    """Every chunk `user` may read, as a queryset; the one gate for chunk access outside search."""
    return Chunk.objects.filter(collection_id__in=readable_collection_ids(user)).select_related("document")


def existing_chunk_ids(chunk_ids: Iterable[int]) -> set[int]:
    """Which of the chunks still exist, whoever may read them (to tell "deleted" from "not yours")."""
    return set(Chunk.objects.filter(pk__in=list(chunk_ids)).values_list("pk", flat=True))


def hits_for_chunks(user: AnyUser | None, chunk_ids: Sequence[int]) -> list[SearchHit]:
    """The given chunks, in the given order, as hits; chunks `user` may not read are left out."""
    chunks = chunks_readable_by(user).select_related("document__collection").in_bulk(list(chunk_ids))
    return [SearchHit(chunk=chunks[cid], score=0.0) for cid in chunk_ids if cid in chunks]


def documents_readable_by(user: AnyUser, *, title: str = "", limit: int = 5) -> list[dict[str, object]]:
    """Metadata of readable, indexed documents whose title or file name contains `title`."""
    documents = Document.objects.filter(
        collection_id__in=readable_collection_ids(user), status=Document.Status.READY
    ).select_related("collection")
    if title:
        documents = documents.filter(Q(title__icontains=title) | Q(filename__icontains=title))
    return [
        {
            "title": d.title,
            "filename": d.filename,
            "collection": d.collection.name,
            "kind": d.kind,
            "pages": d.page_count,
            "chunks": d.chunk_count,
            "version": d.version,
            "indexed_at": d.indexed_at.isoformat() if d.indexed_at else None,
        }
        for d in documents.order_by("title")[:limit]
    ]


def example_questions(user: AnyUser, *, limit: int = 4) -> list[str]:
    """Questions to offer on a first visit, drawn from headings the user can actually read."""
    rows = (
        chunks_readable_by(user)
        .exclude(heading_path=[])
        .order_by("document_id", "position")
        .values_list("document__title", "heading_path")[:200]
    )
    questions: list[str] = []
    seen: set[str] = set()
    for title, path in rows:
        topic = str(path[-1]).strip()
        if not topic or topic.lower() in seen or len(topic) > 80:
            continue
        seen.add(topic.lower())
        questions.append(f"What does {title} say about {topic}?")
        if len(questions) >= limit:
            break
    if len(questions) < limit:
        titles = (
            Document.objects.filter(
                collection_id__in=readable_collection_ids(user), status=Document.Status.READY
            )
            .order_by("-indexed_at")
            .values_list("title", flat=True)[: limit * 2]
        )
        for title in titles:
            question = f"What are the key points of {title}?"
            if question not in questions:
                questions.append(question)
            if len(questions) >= limit:
                break
    return questions


def documents_for_staff(*, limit: int = 200) -> list[Document]:
    return list(Document.objects.select_related("collection", "uploaded_by").order_by("-created_at")[:limit])
