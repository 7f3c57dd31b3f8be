"""Reads for the knowledge app, above all `search`: hybrid retrieval under the reader's permissions."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.db import connection, transaction
from django.db.models import Q, QuerySet

from common.text import CJK_RANGES
from common.users import AnyUser
from gateway import provider
from knowledge.models import CJK_PAIRS_FUNCTION, Chunk, Collection, Document

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
# websearch syntax that narrows a search (a quoted phrase, an excluded -word): such a query is run
# as written and never widened with chunks holding any of its words. A plain "or" is left to
# websearch in the every-word pass; it is mostly English in a question ("paid or unpaid?"), and
# treating it as an operator cost 1.2 points of keyword recall@5 on SQuAD 2.0.
_OPERATORS = re.compile(r'"|(^|\s)-\w')


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


# Collections with their own partial indexes (knowledge.services.collection_indexes_sync), read
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


# websearch's "-" excludes the one word after it, and a CJK run becomes several pairs: a run
# excluded outside quotes ("-中華民國") is quoted first, so that websearch excludes its pairs as
# one phrase rather than the first pair alone. The lookbehind counts the quotes before it.
_NEGATED_CJK_RUN = rf'(?<=^[^"]*(?:"[^"]*"[^"]*)*)(^|\s)-([{CJK_RANGES}]+)'


def indexed_text_sql(text: str, *, websearch: bool = False) -> str:
    """SQL for the text `text` (an SQL expression) as the index holds it: each run of CJK
    characters as its overlapping pairs (knowledge.models.CJK_PAIRS_FUNCTION), so that a
    question's Chinese or Japanese words match the chunks' own. Text without CJK characters is
    unchanged. For websearch syntax, an excluded CJK run is quoted first."""
    if websearch:
        text = f"regexp_replace({text}, '{_NEGATED_CJK_RUN}', '\\1-\"\\2\"', 'g')"
    return f"{CJK_PAIRS_FUNCTION}({text})"


def keyword_query_sql() -> str:
    """SQL for the tsquery of %(q)s: websearch syntax, matched in English and language-neutrally.

    Used as written when the user typed operators. A question in plain words would AND every
    word under websearch rules, which finds nothing for most questions, so plain questions
    instead OR their informative lexemes (`informative_lexemes`) and ranking decides. The
    neutral side drops English stopwords (migration 0002). CJK text is matched by character
    pairs (`indexed_text_sql`): a run's pairs are all required, and a quoted run is a phrase.
    """
    text = indexed_text_sql("%(q)s", websearch=True)
    return f"(websearch_to_tsquery('english', {text}) || websearch_to_tsquery('groundwork_simple', {text}))"


# A word in more than this share of all chunks says almost nothing about relevance (BM25 gives it
# an IDF near zero) yet costs a lookup of every chunk holding it, so it is left out of the
# any-word pass. On SQuAD 2.0 keeping every word changed keyword recall@5 by -0.001.
COMMON_LEXEME_SHARE = 0.05
# Looking a word up costs 1-3 µs a matching chunk (its row is read for the permission filter and
# the length), so in a large table words are kept rarest first while the readable chunks
# estimated to hold any of them stay within this budget; a question whose rarest word alone is
# over it gets no any-word pass (at a million chunks such a word is in 8,000 or more and its
# IDF is low), and the vector side carries it. Below 100,000 readable chunks the 5% rule binds
# first. Each word's lookup is also capped at this many chunks, in case the statistics are stale.
KEYWORD_RANK_BUDGET = 5_000
# Below this many chunks ranking every match is cheap, and frequencies from so few are noise.
COMMON_LEXEME_MIN_ROWS = 2_000
_LEXEME_STATS_SECONDS = 300.0


@dataclass(frozen=True)
class _LexemeStats:
    frequencies: dict[str, float]  # share of chunks holding each of the most common lexemes
    floor: float  # a lexeme not listed is at most this common
    rows: float


_lexeme_stats: tuple[float, _LexemeStats] = (-math.inf, _LexemeStats({}, 0.0, 0.0))


def _lexeme_statistics() -> _LexemeStats:
    """Shares of chunks holding the table's most common lexemes, from ANALYZE.

    PostgreSQL keeps the most common elements of a tsvector column (about a thousand with the
    default statistics target) with their frequencies; autovacuum refreshes them as documents
    come and go. Reading them costs nothing per query; they are cached in the process for a
    few minutes. Without statistics yet, or in a small table, nothing counts as common.
    """
    global _lexeme_stats
    fetched_at, stats = _lexeme_stats
    if time.monotonic() - fetched_at < _LEXEME_STATS_SECONDS:
        return stats
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT most_common_elems::text::text[], most_common_elem_freqs, "
            "(SELECT reltuples FROM pg_class WHERE oid = 'knowledge_chunk'::regclass) FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = 'knowledge_chunk' "
            "AND attname = 'search_vector'"
        )
        row = cursor.fetchone()
    stats = _LexemeStats({}, 0.0, 0.0)
    if row and row[0] and row[2] >= COMMON_LEXEME_MIN_ROWS:
        # most_common_elem_freqs holds one frequency per element, then min, max and null share.
        frequencies = dict(zip(row[0], row[1], strict=False))
        stats = _LexemeStats(frequencies, min(frequencies.values()), float(row[2]))
    _lexeme_stats = (time.monotonic(), stats)
    return stats


def informative_lexemes(query: str, readable_rows: float | None = None) -> list[str]:
    """The query's lexemes (English and language-neutral) worth ranking chunks by, rarest first.

    Common ones (in more than COMMON_LEXEME_SHARE of chunks) are dropped, and when many chunks
    are readable the rarer ones are kept only while the readable chunks estimated to hold any of
    them fit KEYWORD_RANK_BUDGET (the table's word frequencies applied to `readable_rows`, the
    whole table by default). When every word is common ("what is it"), the two least common are
    kept if they fit, so that a small table still has something to rank. A CJK run's lexemes are
    its character pairs.
    """
    text = indexed_text_sql("%(q)s")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT unnest(tsvector_to_array("  # noqa: S608 (our own SQL, the text a parameter)
            f"to_tsvector('english', {text}) || to_tsvector('groundwork_simple', {text})))",
            {"q": query},
        )
        lexemes = [row[0] for row in cursor.fetchall()]
    stats = _lexeme_statistics()

    def share(lexeme: str) -> float:
        return stats.frequencies.get(lexeme, stats.floor)

    by_rarity = sorted(lexemes, key=lambda lexeme: (share(lexeme), lexeme))
    rows = stats.rows if readable_rows is None else min(stats.rows, readable_rows)
    kept: list[str] = []
    estimated = 0.0
    for lexeme in by_rarity:
        if share(lexeme) > COMMON_LEXEME_SHARE:
            break
        estimated += share(lexeme) * rows
        if estimated > KEYWORD_RANK_BUDGET:
            break
        kept.append(lexeme)
    if kept or not by_rarity:
        return kept
    least_common = by_rarity[:2]
    return least_common if sum(share(lexeme) for lexeme in least_common) * rows <= KEYWORD_RANK_BUDGET else []


# A reader of more than KEYWORD_RANK_CAP_FROM_ROWS chunks gets at most KEYWORD_RANK_MAX_ROWS
# matching chunks ranked per statement. Ranking detoasts each one's tsvector (~10 µs a chunk with
# everything in shared buffers at a million chunks), and even the rarest word of a question can
# be in thousands of chunks of a large table; past the cap the keyword side ranks the first
# matches it reads and leaves the rest to the vector side. A smaller reader gets every match
# ranked: capping COVID-QA's 2,530 chunks cost 1.2 points of hybrid recall@5.
KEYWORD_RANK_MAX_ROWS = 1_000
KEYWORD_RANK_CAP_FROM_ROWS = 20_000


def _ranked_matches(
    tsquery: str, params: dict[str, Any], limit: int, readable_rows: int | None = None
) -> list[tuple[int, float]]:
    capped = readable_rows is None or readable_rows > KEYWORD_RANK_CAP_FROM_ROWS
    # Only our own SQL fragments are formatted in; the user's text is a parameter.
    sql = (
        "SELECT m.id, ts_rank_cd(m.search_vector, q.query, 32) AS rank "  # noqa: S608
        f"FROM (SELECT {tsquery} AS query) AS q, LATERAL (SELECT id, search_vector FROM knowledge_chunk "
        "WHERE collection_id = ANY(%(ids)s) AND search_vector @@ q.query LIMIT %(cap)s) AS m "
        "ORDER BY rank DESC, m.id LIMIT %(limit)s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, {**params, "limit": limit, "cap": KEYWORD_RANK_MAX_ROWS if capped else None})
        return cursor.fetchall()


# BM25 (Robertson and Zaragoza's Okapi weighting) over the question's informative words, each
# counted once per chunk: a chunk's score is the sum, over the words it holds, of the word's
# inverse document frequency among the reader's chunks, damped for long chunks. Word counts
# within a chunk would need its tsvector read (~14 µs a chunk); membership comes from the GIN
# index alone (~1 µs). Against ts_rank_cd, which has no IDF, keyword recall@5 went from 0.81 to
# 0.94 on SQuAD 2.0 and from 0.62 to 0.74 on COVID-QA (bench/retrieval_quality.py).
BM25_K1 = 1.2
BM25_B = 0.75


def _bm25_sql(split: tuple[list[int], list[int]] | None) -> str:
    """The statement scoring chunks by `_bm25_matches`; with the reader's (indexed, rest) split
    (`SearchPlan.indexed_split`) each word is looked up in each indexed collection's own GIN index."""

    def lookup(collections: str) -> str:
        return (
            "SELECT id, token_count FROM knowledge_chunk "  # noqa: S608
            f"WHERE collection_id {collections} AND search_vector @@ quote_literal(w.lexeme)::tsquery"
        )

    if split is None:
        branches = [lookup("= ANY(%(ids)s)")]
    else:
        indexed, rest = split
        # Constants, so that the planner matches each partial index's predicate.
        branches = [lookup(f"= {int(cid)}") for cid in indexed]
        if rest:
            branches.append(lookup("= ANY(%(rest)s)"))
    lookups = " UNION ALL ".join(branches)
    return (
        "WITH matches AS MATERIALIZED (SELECT w.lexeme, c.id, c.token_count "  # noqa: S608
        "FROM unnest(%(lexemes)s::text[]) AS w(lexeme), "
        f"LATERAL (SELECT id, token_count FROM ({lookups}) AS lookup LIMIT %(cap)s) AS c), "
        "df AS (SELECT w.lexeme, count(m.id) AS n, "
        "ln(1 + (greatest(%(rows)s, count(m.id)) - count(m.id) + 0.5::float8) / (count(m.id) + 0.5::float8)) "
        "AS idf FROM unnest(%(lexemes)s::text[]) AS w(lexeme) LEFT JOIN matches AS m USING (lexeme) "
        "GROUP BY w.lexeme), "
        "mass AS (SELECT sum(idf) AS idf FROM df), "
        "average AS (SELECT greatest(avg(token_count), 1)::float8 AS tokens FROM matches) "
        "SELECT m.id, sum(df.idf * (%(k1)s::float8 + 1) / (1 + %(k1)s::float8 * (1 - %(b)s::float8 "
        "+ %(b)s::float8 * m.token_count / average.tokens))) AS score, mass.idf "
        "FROM matches AS m JOIN df USING (lexeme), average, mass "
        "GROUP BY m.id, mass.idf ORDER BY score DESC, m.id LIMIT %(limit)s"
    )


def _bm25_matches(lexemes: list[str], plan: SearchPlan, limit: int) -> tuple[list[tuple[int, float]], float]:
    """Chunks holding any of `lexemes`, best BM25 score first, and the sum of the lexemes' IDF.

    Document frequencies are counted among the reader's own chunks in the same statement, so a
    word common in one team's collection weighs little there whatever the rest of the table
    holds. The average chunk length is that of the matching chunks, an estimate of the reader's.
    The IDF sum is what a chunk of average length holding every lexeme scores: a match's share
    of it says how much of the question the match covers (a lexeme no chunk holds counts fully).
    """
    split = plan.indexed_split
    params: dict[str, Any] = {
        "lexemes": lexemes,
        "ids": plan.collection_ids,
        "rest": split[1] if split else [],
        "rows": plan.readable_rows or 0,
        "k1": BM25_K1,
        "b": BM25_B,
        "limit": limit,
        "cap": KEYWORD_RANK_BUDGET,
    }
    with connection.cursor() as cursor:
        cursor.execute(_bm25_sql(split), params)
        rows = cursor.fetchall()
    return [(chunk_id, float(score)) for chunk_id, score, _ in rows], float(rows[0][2]) if rows else 0.0


@dataclass(frozen=True)
class KeywordSides:
    """The keyword side's two passes for one query, each best first."""

    every_word: list[tuple[int, float]]  # ts_rank_cd; the typed query as written when `typed`
    bm25: list[tuple[int, float]]  # BM25 over `lexemes` (every-word chunks included)
    lexemes: list[str]  # the informative lexemes the BM25 pass ranked by
    typed: bool = False  # websearch syntax that narrows: no BM25 pass
    idf_mass: float = 0.0  # the lexemes' summed IDF (`_bm25_matches`)

    def merged(self, limit: int) -> list[tuple[int, float]]:
        """The keyword ranking: every-word chunks first, then the rest by BM25."""
        seen = {chunk_id for chunk_id, _ in self.every_word}
        return (self.every_word + [hit for hit in self.bm25 if hit[0] not in seen])[:limit]

    def coverage(self) -> dict[int, float]:
        """Each matching chunk's share of the question: its BM25 score over the lexemes' summed
        IDF (what a chunk of average length holding all of them scores), at most 1. A chunk
        matching a typed query matches all of it."""
        if self.typed:
            return {chunk_id: 1.0 for chunk_id, _ in self.every_word}
        if self.idf_mass <= 0:
            return {}
        return {chunk_id: min(score / self.idf_mass, 1.0) for chunk_id, score in self.bm25}


def keyword_sides(query: str, plan: SearchPlan, limit: int) -> KeywordSides:
    """Full-text matches in two passes.

    Typed websearch syntax that narrows (phrases, exclusions) is run as written and ranked by
    ts_rank_cd.
    A plain question first asks for chunks holding all its words, ranked by ts_rank_cd; then
    chunks holding any of its informative words are ranked by BM25 (`_bm25_matches`), unless
    the first pass already filled the list (its words are then common, and BM25 has little to
    tell apart).
    """
    params = {"q": query, "ids": plan.collection_ids}
    every_word = _ranked_matches(keyword_query_sql(), params, limit, plan.readable_rows)
    if _OPERATORS.search(query):
        return KeywordSides(every_word, [], [], typed=True)
    if len(every_word) >= limit:
        return KeywordSides(every_word, [], [])
    lexemes = informative_lexemes(query, plan.readable_rows)
    if not lexemes:
        return KeywordSides(every_word, [], [])
    ranked, mass = _bm25_matches(lexemes, plan, limit)
    return KeywordSides(every_word, ranked, lexemes, idf_mass=mass)


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
