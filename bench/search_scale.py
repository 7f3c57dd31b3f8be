"""Search latency and recall at 100k-1M chunks, with and without a permission filter.

    python bench/search_scale.py [--rows 100000|1000000] [--queries 200] [--keep] [--reuse]
                                 [--collection-indexes] [--alternatives] [--out FILE]

Loads synthetic chunks by binary COPY into knowledge_chunk across 20 bench collections (one
user reads 1 of them, 5% of the rows; another reads 2, 10%; the superuser reads everything),
builds the GIN and HNSW indexes after the load, warms the caches, then measures `search()` in
"vector" and "hybrid" mode (query vector passed in, so no embedding call) and recall@10 of the
vector side against an exact scan with the same filter.

Synthetic data: text is drawn from a fixed vocabulary (English stop words at the head, then
20,000 made-up words with a Zipf tail, plus per-topic words), so the keyword side meets the
same common-word matches real questions cause. Vectors are normalised, 384-d, around 1,000
gaussian topic centres with a low-rank within-topic spread and a little isotropic noise, so
neighbourhoods have structure as real embeddings do. Documents hold 50 consecutive chunks and
are spread over the collections at random, as uploads over time would be.

--collection-indexes first builds the partial HNSW index of each collection the readers can
read (what the beat task gives every collection of 20,000 chunks or more), so the filtered
scenarios measure search through them; without it any such index is dropped and the filtered
scenarios use the table's index.

--alternatives also measures other plans for filtered queries (planner settings, HNSW
post-filtering at several ef_search, a partial HNSW index, narrow and collection-clustered
copies of the vectors) and ef_search for unfiltered ones. Without --keep the bench rows are
deleted at the end and the indexes rebuilt over what remains.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    bench_superuser,
    emit,
    environment,
    latency_summary,
    log,
    setup_django,
)

PREFIX = "bench-scale-"
COLLECTIONS = 20
CHUNKS_PER_DOC = 50
CLUSTERS = 1000
RANK = 24  # within-topic spread lives in a low-dimensional subspace, like real embeddings
VOCABULARY = 20_000
TOPIC_WORDS = 40
K = 10
TARGET_P95_MS = 50.0
TARGET_RECALL = 0.95

READERS = {"bench-reader-5pct": 1, "bench-reader-10pct": 2}  # username: collections readable

# Index definitions exactly as the knowledge migration creates them.
INDEXES = {
    "chunk_embedding_hnsw": "CREATE INDEX IF NOT EXISTS chunk_embedding_hnsw ON knowledge_chunk "
    "USING hnsw (embedding vector_cosine_ops) WITH (m = 32, ef_construction = 128)",
    "chunk_search_gin": "CREATE INDEX IF NOT EXISTS chunk_search_gin ON knowledge_chunk "
    "USING gin (search_vector)",
}
_STOP_TEXT = (
    "the of and to in a is that for it as was with be by on not he i this are or his from at which "
    "but have an they you were their one all we can her has there been if more when will would who so no"
)
STOP_WORDS = tuple(_STOP_TEXT.split())


@dataclass
class Query:
    chunk_id: int
    text: str
    vector: list[float]


# --- database helpers --------------------------------------------------------------------------


def _raw() -> Any:
    """The psycopg connection under Django's, in autocommit mode."""
    from django.db import connection

    connection.ensure_connection()
    return connection.connection


def _sql(statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    with _raw().cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _timed_sql(statement: str) -> float:
    started = time.perf_counter()
    _sql(statement)
    return time.perf_counter() - started


def _scale_collection_ids() -> list[int]:
    from knowledge.models import Collection

    return list(
        Collection.objects.filter(name__startswith=PREFIX).order_by("name").values_list("pk", flat=True)
    )


def _drop_indexes() -> None:
    for name in INDEXES:
        _sql(f"DROP INDEX IF EXISTS {name}")


def _build_indexes(timings: dict[str, Any]) -> None:
    notices: list[str] = []
    raw = _raw()
    raw.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    # The HNSW graph of 1M 384-d vectors needs ~2.5 GB; a build that overflows this goes slower.
    _sql("SET maintenance_work_mem = '4GB'")
    log("building the GIN index")
    timings["gin_build_s"] = round(_timed_sql(INDEXES["chunk_search_gin"]), 1)
    log(f"GIN built in {timings['gin_build_s']} s; building the HNSW index")
    timings["hnsw_build_s"] = round(_timed_sql(INDEXES["chunk_embedding_hnsw"]), 1)
    log(f"HNSW built in {timings['hnsw_build_s']} s")
    _sql("RESET maintenance_work_mem")
    timings["build_notices"] = notices
    timings["vacuum_analyze_s"] = round(_timed_sql("VACUUM ANALYZE knowledge_chunk"), 1)


def build_collection_indexes(collection_ids: Sequence[int], timings: dict[str, Any]) -> None:
    """The partial indexes (HNSW and GIN) of the readers' collections, as the beat task builds them.

    At 1M rows every bench collection holds 50,000 chunks, over KNOWLEDGE_COLLECTION_INDEX_MIN_CHUNKS,
    so the beat task would index all 20; only the readers' two are built here (~85 s each at 1M
    with m 32), as only they are searched.
    """
    from knowledge.indexes import collection_index_create
    from knowledge.selectors import collections_with_index

    present = collections_with_index()
    started = time.perf_counter()
    _sql("SET maintenance_work_mem = '2GB'")
    built = [cid for cid in collection_ids if cid not in present]
    for collection_id in built:
        log(f"building the partial index of collection {collection_id}")
        collection_index_create(collection_id=collection_id)
    _sql("RESET maintenance_work_mem")
    timings["collection_indexes"] = {
        "collections": list(collection_ids),
        "built": len(built),
        "seconds": round(time.perf_counter() - started, 1),
    }


def drop_collection_indexes(collection_ids: Sequence[int]) -> None:
    from knowledge.indexes import collection_index_drop

    for collection_id in collection_ids:
        collection_index_drop(collection_id=collection_id)


def _delete_scale_data() -> None:
    from knowledge.models import Collection, Document

    ids = _scale_collection_ids()
    if ids:
        _sql("DELETE FROM knowledge_chunk WHERE collection_id = ANY(%s)", [ids])
        Document.objects.filter(collection_id__in=ids).delete()
        Collection.objects.filter(pk__in=ids).delete()


def cleanup() -> dict[str, float]:
    """Remove the bench rows: without the big indexes, then rebuild them over what remains."""
    started = time.perf_counter()
    _drop_indexes()
    drop_collection_indexes(_scale_collection_ids())
    _delete_scale_data()
    _sql("VACUUM ANALYZE knowledge_chunk")
    for statement in INDEXES.values():
        _sql(statement)
    return {"cleanup_s": round(time.perf_counter() - started, 1)}


def _relation_files(relation: str) -> list[Path]:
    from django.conf import settings

    rows = _sql("SELECT pg_relation_filepath(%s), current_setting('data_directory')", [relation])
    if not rows or rows[0][0] is None:
        return []
    base = Path(rows[0][1] or settings.DATA_DIR) / rows[0][0]
    files = [base]
    segment = 1
    while Path(f"{base}.{segment}").exists():
        files.append(Path(f"{base}.{segment}"))
        segment += 1
    return [f for f in files if f.exists()]


def prewarm(relations: Sequence[str]) -> dict[str, Any]:
    """Read relation files once so the OS page cache holds them (pgserver has no pg_prewarm)."""
    started = time.perf_counter()
    total = 0
    for relation in relations:
        for path in _relation_files(relation):
            with path.open("rb") as handle:
                while block := handle.read(8 << 20):
                    total += len(block)
    return {"relations": list(relations), "bytes": total, "seconds": round(time.perf_counter() - started, 1)}


def warm_shared_buffers() -> dict[str, Any]:
    """Read every chunk row and its tsvector through PostgreSQL's own buffers, as a server that
    has been answering queries for a while holds them.

    A sequential scan of a large table goes through a small ring of buffers and leaves nothing
    behind, so the rows are read by a bitmap scan of the primary key, and each tsvector is
    detoasted (TOAST pages are read by index). The HNSW pages are warmed by the warm-up queries.
    Without this the keyword side reads its first thousands of rows one system call at a time.
    """
    started = time.perf_counter()
    with _raw().transaction(), _raw().cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cursor.execute("SELECT sum(length(search_vector)) FROM knowledge_chunk WHERE id >= 0")
        cursor.execute("SELECT current_setting('shared_buffers')")
        size = cursor.fetchone()[0]
    return {"seconds": round(time.perf_counter() - started, 1), "shared_buffers": size}


# --- synthetic data ----------------------------------------------------------------------------


def _vocabulary() -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["qua", "xi", "zor", "ulm", "esk"]
    words: list[str] = []
    seen = set(STOP_WORDS)
    n = len(syllables)
    index = 0
    while len(words) < VOCABULARY:
        i, parts = index, []
        for _ in range(2 + index % 3):
            parts.append(syllables[i % n])
            i = i // n + 7 * len(parts)
        word = "".join(parts)
        index += 1
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _topics(rng: Any, dims: int) -> tuple[Any, Any, Any]:
    import numpy as np

    centres = rng.standard_normal((CLUSTERS, dims)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # Orthonormal-ish directions per topic; coefficients give a within-topic spread of ~0.8.
    bases = (rng.standard_normal((CLUSTERS, dims, RANK)) / math.sqrt(dims)).astype(np.float32)
    topic_words = rng.integers(0, VOCABULARY, size=(CLUSTERS, TOPIC_WORDS))
    return centres, bases, topic_words


def load(rows: int, words: int, seed: int, timings: dict[str, Any]) -> None:
    import numpy as np
    from django.conf import settings
    from django.contrib.auth.models import User
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb

    from knowledge.models import Collection, Document

    dims = settings.EMBEDDING_DIMENSIONS
    rng = np.random.default_rng(seed)
    vocab = np.array(_vocabulary() + list(STOP_WORDS), dtype=object)
    stop_ids = np.arange(VOCABULARY, VOCABULARY + len(STOP_WORDS))
    stop_p = 1.0 / np.arange(1, len(STOP_WORDS) + 1)
    stop_p /= stop_p.sum()
    zipf_p = 1.0 / (np.arange(VOCABULARY) + 10.0)
    zipf_p /= zipf_p.sum()
    centres, bases, topic_words = _topics(rng, dims)

    log("dropping the HNSW and GIN indexes and any earlier bench rows")
    _drop_indexes()
    _delete_scale_data()

    collections = [
        Collection.objects.create(name=f"{PREFIX}{i:02d}", description="search_scale.py synthetic data")
        for i in range(COLLECTIONS)
    ]
    for username, count in READERS.items():
        user, _ = User.objects.get_or_create(username=username)
        user.readable_collections.set(collections[:count])
    n_docs = rows // CHUNKS_PER_DOC
    owners = rng.permutation(np.arange(n_docs) % COLLECTIONS)  # exactly rows/20 per collection
    documents = Document.objects.bulk_create(
        [
            Document(
                collection=collections[int(owners[d])],
                title=f"Synthetic document {d}",
                filename=f"synthetic-{d:07d}.txt",
                file="",
                size_bytes=0,
                sha256=f"{d:064d}",
                status=Document.Status.READY,
                chunk_count=CHUNKS_PER_DOC,
                token_count=CHUNKS_PER_DOC * words,
                progress=100,
            )
            for d in range(n_docs)
        ],
        batch_size=2000,
    )

    raw = _raw()
    register_vector(raw)
    log(f"COPY {n_docs * CHUNKS_PER_DOC:,} rows ({words} words each)")
    started = time.perf_counter()
    columns = (
        "document_id, collection_id, position, text, heading_path, page, char_start, char_end, "
        "token_count, embedding"
    )
    types = ["int8", "int8", "int4", "text", "jsonb", "int4", "int4", "int4", "int4", "vector"]
    empty = Jsonb([])
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY knowledge_chunk ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(types)
        for d, document in enumerate(documents):
            topic = int(rng.integers(CLUSTERS))
            spread = rng.standard_normal((CHUNKS_PER_DOC, RANK)).astype(np.float32) * (0.8 / math.sqrt(RANK))
            noise = rng.standard_normal((CHUNKS_PER_DOC, dims)).astype(np.float32) * (0.3 / math.sqrt(dims))
            vectors = centres[topic] + spread @ bases[topic].T + noise
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            # About 40% stop words, 20% topic words, 40% Zipf-distributed background words.
            kinds = rng.random((CHUNKS_PER_DOC, words))
            ids = np.where(
                kinds < 0.4,
                rng.choice(stop_ids, size=(CHUNKS_PER_DOC, words), p=stop_p),
                np.where(
                    kinds < 0.6,
                    topic_words[topic][rng.integers(0, TOPIC_WORDS, size=(CHUNKS_PER_DOC, words))],
                    rng.choice(VOCABULARY, size=(CHUNKS_PER_DOC, words), p=zipf_p),
                ),
            )
            for position in range(CHUNKS_PER_DOC):
                text = " ".join(vocab[ids[position]])
                copy.write_row(
                    (
                        document.pk,
                        document.collection_id,
                        position,
                        text,
                        empty,
                        None,
                        0,
                        len(text),
                        words * 13 // 10,
                        vectors[position],
                    )
                )
            if (d + 1) % 2000 == 0:
                log(f"  {(d + 1) * CHUNKS_PER_DOC:,} rows in {time.perf_counter() - started:.0f} s")
    timings["copy_s"] = round(time.perf_counter() - started, 1)
    timings["rows_loaded"] = n_docs * CHUNKS_PER_DOC
    log(f"COPY took {timings['copy_s']} s")
    _build_indexes(timings)


# --- measurement -------------------------------------------------------------------------------


_VECTOR_LITERAL = re.compile(r"'\[[^\]]*\]'::vector")


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def make_queries(collection_ids: list[int], n: int, rng: Any, dims: int) -> list[Query]:
    """Perturbed copies of random chunks the user can read, asked as a question in words."""
    import numpy as np

    ids = [
        row[0]
        for row in _sql("SELECT id FROM knowledge_chunk WHERE collection_id = ANY(%s)", [collection_ids])
    ]
    picked = [int(i) for i in rng.choice(ids, size=n, replace=False)]
    rows = {
        row[0]: row[1:]
        for row in _sql("SELECT id, text, embedding::text FROM knowledge_chunk WHERE id = ANY(%s)", [picked])
    }
    queries = []
    for chunk_id in picked:
        text, literal = rows[chunk_id]
        vector = np.array([float(x) for x in literal.strip("[]").split(",")], dtype=np.float64)
        vector += rng.standard_normal(dims) * (0.35 / math.sqrt(dims))
        vector /= np.linalg.norm(vector)
        content = [w for w in text.split() if w not in STOP_WORDS]
        chosen = [content[int(i)] for i in rng.choice(len(content), size=3, replace=False)]
        question = f"what is the {chosen[0]} of {chosen[1]} and {chosen[2]}"
        queries.append(Query(chunk_id, question, [float(x) for x in vector]))
    return queries


def exact_top(vector: Sequence[float], collection_ids: list[int] | None, k: int = K) -> list[int]:
    literal = _vector_literal(vector)
    if collection_ids is None:
        rows = _sql(
            "SELECT id FROM knowledge_chunk ORDER BY (embedding <=> %s::vector) + 0, id LIMIT %s",
            [literal, k],
        )
    else:
        rows = _sql(
            "SELECT id FROM knowledge_chunk WHERE collection_id = ANY(%s) "
            "ORDER BY (embedding <=> %s::vector) + 0, id LIMIT %s",
            [collection_ids, literal, k],
        )
    return [row[0] for row in rows]


def _recall(found: Sequence[Sequence[int]], truth: Sequence[Sequence[int]]) -> float:
    scores = [len(set(f[:K]) & set(t)) / max(len(t), 1) for f, t in zip(found, truth, strict=True)]
    return round(sum(scores) / len(scores), 4)


def _statement_kind(sql: str) -> str:
    if "ts_rank_cd" in sql:
        return "keyword SQL (every word)"
    if "unnest(" in sql and "lexeme" in sql:
        return "keyword SQL (BM25, any word)"
    if "<=>" in sql:
        return "vector SQL"
    if sql.startswith("SET"):
        return "SET LOCAL"
    if 'FROM "knowledge_chunk"' in sql:
        return "chunk rows fetch (in_bulk)"
    return "permission and plan queries"


def measure_search(user: Any, queries: Sequence[Query], mode: str) -> tuple[list[list[int]], dict[str, Any]]:
    """search() latency, with the time inside each kind of SQL statement it ran (same window)."""
    from django.db import connection

    from knowledge import selectors

    latencies: list[float] = []
    results: list[list[int]] = []
    plans: list[Any] = []
    in_sql: dict[str, float] = {}

    def clock(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            kind = _statement_kind(sql)
            in_sql[kind] = in_sql.get(kind, 0.0) + time.perf_counter() - started

    with connection.execute_wrapper(clock):
        for query in queries:
            started = time.perf_counter()
            hits = selectors.search(
                user, query.text, k=K, query_vector=query.vector, mode=mode, plan_out=plans
            )
            latencies.append(time.perf_counter() - started)
            results.append([hit.chunk.pk for hit in hits])
    strategies = Counter(f"{p.strategy} (ef_search={p.ef_search}, readable={p.readable_rows})" for p in plans)
    n = len(queries)
    breakdown = {kind: round(1000 * seconds / n, 2) for kind, seconds in sorted(in_sql.items())}
    breakdown["python and the rest"] = round(1000 * (sum(latencies) - sum(in_sql.values())) / n, 2)
    return results, {
        "latency": latency_summary(latencies),
        "mean_ms_by_part": breakdown,
        "plans": dict(strategies),
    }


def measure_sql(
    queries: Sequence[Query], statement: str, params: Any, settings: Sequence[str] = ()
) -> tuple[list[list[int]], dict[str, Any]]:
    """Latency of one statement per query (%(v)s: its vector, %(q)s: its text), in a transaction."""
    raw = _raw()
    latencies: list[float] = []
    results: list[list[int]] = []
    for query in queries:
        started = time.perf_counter()
        with raw.transaction(), raw.cursor() as cursor:
            for setting in settings:
                cursor.execute(setting)
            cursor.execute(statement, {**params, "v": _vector_literal(query.vector), "q": query.text})
            results.append([row[0] for row in cursor.fetchall()])
        latencies.append(time.perf_counter() - started)
    return results, {"latency": latency_summary(latencies)}


def measure_keyword(queries: Sequence[Query], collection_ids: list[int], semantics: str) -> dict[str, Any]:
    """The selector's keyword side alone: latency, and how many rows the tsquery matches."""
    from knowledge import keywords, selectors

    original = keywords._OPERATORS
    if semantics == "and":
        keywords._OPERATORS = re.compile("")  # as if the user typed operators: websearch AND
    latencies: list[float] = []
    matched: list[int] = []
    plan = selectors._plan(collection_ids)  # the search computes it once, before either side
    try:
        for query in queries:
            started = time.perf_counter()
            selectors.keyword_sides(query.text, plan, 4 * K)
            latencies.append(time.perf_counter() - started)
        tsquery = keywords.keyword_query_sql()
        if semantics == "or":
            tsquery = f"replace(({tsquery})::text, ' & ', ' | ')::tsquery"
        for query in queries[:20]:
            row = _sql(
                f"SELECT count(*) FROM knowledge_chunk, (SELECT {tsquery} AS query) AS q "
                "WHERE collection_id = ANY(%(ids)s) AND search_vector @@ q.query",
                {"q": query.text, "ids": collection_ids},
            )
            matched.append(row[0][0])
    finally:
        keywords._OPERATORS = original
    return {
        "latency": latency_summary(latencies),
        "matched_rows_median_of_20": sorted(matched)[len(matched) // 2],
        "example_query": queries[0].text,
    }


def measure_keyword_rare(
    queries: Sequence[Query], collection_ids: list[int], df: dict[str, int], max_rows: float
) -> dict[str, Any]:
    """Keyword side with ORed words limited to those in at most `max_rows` chunks (IDF cut-off)."""
    from bench.retrieval_quality import RARE_SQL

    latencies: list[float] = []
    kept_counts: list[int] = []
    for query in queries:
        started = time.perf_counter()
        lexemes = [
            row[0]
            for row in _sql(
                "SELECT DISTINCT unnest(tsvector_to_array(to_tsvector('english', %(q)s) || "
                "to_tsvector('groundwork_simple', %(q)s)))",
                {"q": query.text},
            )
        ]
        lexemes.sort(key=lambda w: df.get(w, 0))
        kept = [w for w in lexemes if df.get(w, 0) <= max_rows] or lexemes[:2]
        _sql(RARE_SQL, {"lexemes": kept, "ids": collection_ids, "limit": 4 * K})
        latencies.append(time.perf_counter() - started)
        kept_counts.append(len(kept))
    return {
        "latency": latency_summary(latencies),
        "words_kept_mean": round(sum(kept_counts) / len(kept_counts), 2),
    }


def explain(statement: str, params: dict[str, Any], settings: Sequence[str] = ()) -> list[str]:
    raw = _raw()
    with raw.transaction(), raw.cursor() as cursor:
        for setting in settings:
            cursor.execute(setting)
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, params)
        return [_VECTOR_LITERAL.sub("$q", row[0]) for row in cursor.fetchall()]


def storage_report() -> dict[str, Any]:
    """Table and index sizes, and how many embeddings PostgreSQL moved out of line into TOAST.

    An uncompressed 384-d vector is exactly 1,540 bytes in TOAST; counting values of that size
    counts the out-of-line embeddings (pgvector's type has EXTERNAL storage, so once a row
    passes ~2 kB the vector, often its largest field, is the first thing moved out).
    """
    toast, heap, rows = _sql(
        "SELECT reltoastrelid::regclass::text, pg_relation_size(oid), "
        "(SELECT count(*) FROM knowledge_chunk) FROM pg_class WHERE relname = 'knowledge_chunk'"
    )[0]
    from django.conf import settings

    vector_bytes = 4 * settings.EMBEDDING_DIMENSIONS + 4  # dim, unused, floats; no varlena header
    out_of_line = _sql(
        f"SELECT count(*) FROM {toast} WHERE chunk_seq = 0 AND length(chunk_data) = %s", [vector_bytes]
    )[0][0]
    sizes = _sql(
        "SELECT pg_size_pretty(pg_relation_size('knowledge_chunk')), "
        "pg_size_pretty(pg_relation_size(%s::regclass)), "
        "pg_size_pretty(pg_relation_size('chunk_embedding_hnsw')), "
        "pg_size_pretty(pg_relation_size('chunk_search_gin'))",
        [toast],
    )[0]
    return {
        "rows": rows,
        "embeddings_out_of_line_share": round(out_of_line / max(rows, 1), 3),
        "heap_bytes_per_row": round(heap / max(rows, 1)),
        "heap": sizes[0],
        "toast": sizes[1],
        "hnsw_index": sizes[2],
        "gin_index": sizes[3],
    }


VECTOR_SQL = "SELECT id FROM knowledge_chunk ORDER BY embedding <=> %(v)s::vector LIMIT %(k)s"
EXACT_SQL = (
    "SELECT id FROM knowledge_chunk WHERE collection_id = ANY(%(ids)s) "
    "ORDER BY (embedding <=> %(v)s::vector) + 0 LIMIT %(k)s"
)
POSTFILTER_SQL = (
    "SELECT id FROM (SELECT id, collection_id, embedding <=> %(v)s::vector AS d FROM knowledge_chunk "
    "ORDER BY embedding <=> %(v)s::vector LIMIT %(fetch)s) AS near "
    "WHERE collection_id = ANY(%(ids)s) ORDER BY d LIMIT %(k)s"
)
# The two vector statements exactly as knowledge.selectors writes them (similarity in the select
# list as well as the distance in ORDER BY).
SELECTOR_HNSW_SQL = (
    "SELECT id, 1 - (embedding <=> %(v)s::vector) FROM knowledge_chunk "
    "ORDER BY embedding <=> %(v)s::vector LIMIT %(k)s"
)
SELECTOR_EXACT_SQL = (
    "SELECT id, 1 - (embedding <=> %(v)s::vector) FROM knowledge_chunk WHERE collection_id = ANY(%(ids)s) "
    "ORDER BY (embedding <=> %(v)s::vector) + 0 LIMIT %(k)s"
)
FILTERED_HNSW_SQL = (
    "SELECT id FROM knowledge_chunk WHERE collection_id = ANY(%(ids)s) "
    "ORDER BY embedding <=> %(v)s::vector LIMIT %(k)s"
)


def alternatives(
    scenarios: dict[str, dict[str, Any]], queries: dict[str, list[Query]], truth: dict[str, list[list[int]]]
) -> dict[str, Any]:
    """Other plans for the same queries; recall@10 against the exact top 10 with the same filter."""
    out: dict[str, Any] = {}

    def run(label: str, scenario: str, statement: str, params: dict[str, Any], settings: Sequence[str] = ()):
        log(f"alternative: {scenario}: {label}")
        found, extra = measure_sql(queries[scenario], statement, {"k": K, **params}, settings)
        out.setdefault(scenario, {})[label] = {"recall@10": _recall(found, truth[scenario]), **extra}

    # Unfiltered: the ef_search trade-off of the plain HNSW scan (the selector uses 100).
    for ef in (40, 100, 200):
        run(f"hnsw ef_search={ef}", "superuser_all", VECTOR_SQL, {}, [f"SET LOCAL hnsw.ef_search = {ef}"])
    run("hnsw ef_search=100, as the selector writes it", "superuser_all", SELECTOR_HNSW_SQL, {},
        ["SET LOCAL hnsw.ef_search = 100"])  # fmt: skip

    for scenario in ("reader_5pct", "reader_10pct"):
        ids = scenarios[scenario]["collection_ids"]
        sample = {"ids": ids, "k": K, "v": _vector_literal(queries[scenario][0].vector)}
        plans = out.setdefault(scenario, {}).setdefault("explain", {})
        plans["exact (default planner)"] = explain(EXACT_SQL, sample)
        run("exact (default planner)", scenario, EXACT_SQL, {"ids": ids})
        run("exact, as the selector writes it (distance computed twice per row)", scenario,
            SELECTOR_EXACT_SQL, {"ids": ids})  # fmt: skip
        run("exact, no parallel workers", scenario, EXACT_SQL, {"ids": ids},
            ["SET LOCAL max_parallel_workers_per_gather = 0"])  # fmt: skip
        run("exact, seq scan only", scenario, EXACT_SQL, {"ids": ids},
            ["SET LOCAL enable_bitmapscan = off", "SET LOCAL enable_indexscan = off"])  # fmt: skip
        run("exact, btree index scan (enable_seqscan/bitmapscan off)", scenario, EXACT_SQL, {"ids": ids},
            ["SET LOCAL enable_seqscan = off", "SET LOCAL enable_bitmapscan = off"])  # fmt: skip
        for ef in (100, 400, 1000):
            run(f"hnsw filtered in WHERE, ef_search={ef}", scenario, FILTERED_HNSW_SQL, {"ids": ids},
                [f"SET LOCAL hnsw.ef_search = {ef}"])  # fmt: skip
        for ef in (400, 1000):
            run(f"hnsw post-filter, fetch {ef}, ef_search={ef}", scenario, POSTFILTER_SQL,
                {"ids": ids, "fetch": ef}, [f"SET LOCAL hnsw.ef_search = {ef}"])  # fmt: skip

    # The keyword side of hybrid search on its own: ORed words (current) against websearch AND.
    all_ids = [row[0] for row in _sql("SELECT id FROM knowledge_collection")]  # the superuser's
    log("document frequencies of every lexeme (ts_stat over the whole table)")
    started = time.perf_counter()
    df = dict(_sql("SELECT word, ndoc FROM ts_stat('SELECT search_vector FROM knowledge_chunk')"))
    out["ts_stat_seconds"] = round(time.perf_counter() - started, 1)
    total = _sql("SELECT count(*) FROM knowledge_chunk")[0][0]
    for scenario in ("superuser_all", "reader_5pct", "reader_10pct"):
        ids = scenarios[scenario]["collection_ids"] or all_ids
        for semantics in ("or", "and"):
            log(f"alternative: {scenario}: keyword side, {semantics.upper()}")
            out.setdefault(scenario, {})[f"keyword side only, words {semantics.upper()}ed"] = measure_keyword(
                queries[scenario], ids, semantics
            )
        log(f"alternative: {scenario}: keyword side, rare words ORed")
        out[scenario]["keyword side only, words in <= 5% of chunks ORed"] = measure_keyword_rare(
            queries[scenario], ids, df, 0.05 * total
        )

    # Physical layout: the same rows with the vector kept inline (STORAGE PLAIN), in id order
    # (as loaded) and clustered by collection (what CLUSTER on chunk_collection would give).
    ids5 = scenarios["reader_5pct"]["collection_ids"]
    columns = "id, collection_id, document_id, position, text, search_vector, embedding"
    for name, order in (("plain", "id"), ("plain_clustered", "collection_id, id")):
        table = f"bench_scale_{name}"
        label = f"exact on a copy with embedding STORAGE PLAIN, ordered by {order}"
        log(f"building {table}")
        _sql(f"DROP TABLE IF EXISTS {table}")
        started = time.perf_counter()
        _sql(f"CREATE TABLE {table} AS SELECT {columns} FROM knowledge_chunk WITH NO DATA")
        _sql(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE PLAIN")
        _sql(f"INSERT INTO {table} SELECT {columns} FROM knowledge_chunk ORDER BY {order}")
        _sql(f"CREATE INDEX {table}_collection ON {table} (collection_id)")
        _sql(f"VACUUM ANALYZE {table}")
        build = round(time.perf_counter() - started, 1)
        size = _sql(
            "SELECT pg_size_pretty(pg_relation_size(oid)), pg_size_pretty(pg_relation_size(reltoastrelid)) "
            "FROM pg_class WHERE relname = %s",
            [table],
        )[0]
        prewarm([table])
        statement = EXACT_SQL.replace("knowledge_chunk", table)
        for scenario in ("reader_5pct", "reader_10pct"):
            ids = scenarios[scenario]["collection_ids"]
            run(label, scenario, statement, {"ids": ids})
            out[scenario][label] |= {"table_build_s": build, "heap": size[0], "toast": size[1]}
        out["reader_5pct"]["explain"][label] = explain(
            statement, {"ids": ids5, "k": K, "v": _vector_literal(queries["reader_5pct"][0].vector)}
        )
        _sql(f"DROP TABLE {table}")

    # A partial HNSW index for the one collection the 5% reader can see.
    collection_id = ids5[0]
    started = time.perf_counter()
    _sql("SET maintenance_work_mem = '2GB'")
    _sql(
        f"CREATE INDEX bench_scale_partial_hnsw ON knowledge_chunk USING hnsw (embedding vector_cosine_ops) "
        f"WITH (m = 32, ef_construction = 128) WHERE collection_id = {int(collection_id)}"
    )
    _sql("RESET maintenance_work_mem")
    build = round(time.perf_counter() - started, 1)
    partial_sql = (
        f"SELECT id FROM knowledge_chunk WHERE collection_id = {int(collection_id)} "
        "ORDER BY embedding <=> %(v)s::vector LIMIT %(k)s"
    )
    for ef in (40, 100):
        run(f"partial hnsw index (WHERE collection_id = X), ef_search={ef}", "reader_5pct", partial_sql, {},
            [f"SET LOCAL hnsw.ef_search = {ef}"])  # fmt: skip
        out["reader_5pct"][f"partial hnsw index (WHERE collection_id = X), ef_search={ef}"][
            "index_build_s"
        ] = build
    out["reader_5pct"]["explain"]["partial hnsw index"] = explain(
        partial_sql, {"k": K, "v": _vector_literal(queries["reader_5pct"][0].vector)}
    )
    # Does the planner use it for the selector's "= ANY(array)" form of the same filter?
    out["reader_5pct"]["explain"]["selector's ANY(array) form with the partial index present"] = explain(
        FILTERED_HNSW_SQL, {"ids": ids5, "k": K, "v": _vector_literal(queries["reader_5pct"][0].vector)}
    )
    _sql("DROP INDEX bench_scale_partial_hnsw")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="chunks to load (100000 or 1000000)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--words", type=int, default=150, help="words per synthetic chunk (~1,000 chars)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the bench rows and indexes afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse bench rows already loaded (same --rows)")
    parser.add_argument("--alternatives", action="store_true", help="also measure other filtered plans")
    parser.add_argument(
        "--collection-indexes",
        action="store_true",
        help="give the readers' collections their own partial vector index first (otherwise none)",
    )
    parser.add_argument("--cleanup-only", action="store_true", help="delete the bench rows and exit")
    parser.add_argument("--out", help="also write the JSON result to this file")
    args = parser.parse_args()

    setup_django()
    import numpy as np
    from django.conf import settings
    from django.contrib.auth.models import User

    if args.cleanup_only:
        emit({"benchmark": "search_scale", **cleanup()}, args.out)
        return 0

    superuser = bench_superuser()
    timings: dict[str, Any] = {}
    existing = _scale_collection_ids()
    loaded = 0
    if existing:
        loaded = _sql("SELECT count(*) FROM knowledge_chunk WHERE collection_id = ANY(%s)", [existing])[0][0]
    if args.reuse and loaded == args.rows // CHUNKS_PER_DOC * CHUNKS_PER_DOC:
        log(f"reusing {loaded:,} bench rows")
        timings["reused_rows"] = loaded
        for statement in INDEXES.values():
            _sql(statement)
    else:
        load(args.rows, args.words, args.seed, timings)

    try:
        env = environment()
        collection_ids = _scale_collection_ids()
        if args.collection_indexes:
            build_collection_indexes(collection_ids[: max(READERS.values())], timings)
        else:
            drop_collection_indexes(collection_ids)
        total_rows = _sql("SELECT count(*) FROM knowledge_chunk")[0][0]
        rng = np.random.default_rng(args.seed + 1)
        users = {"superuser_all": superuser} | {
            name.removeprefix("bench-").replace("-", "_"): User.objects.get(username=name) for name in READERS
        }
        scenarios: dict[str, dict[str, Any]] = {
            "superuser_all": {"user": superuser.username, "collection_ids": None, "filter": "none"}
        }
        for (key, user), count in zip(list(users.items())[1:], READERS.values(), strict=True):
            scenarios[key] = {"user": user.username, "collection_ids": collection_ids[:count]}
        for key, scenario in scenarios.items():
            ids = scenario["collection_ids"]
            scenario["readable_rows"] = (
                total_rows
                if ids is None
                else _sql("SELECT count(*) FROM knowledge_chunk WHERE collection_id = ANY(%s)", [ids])[0][0]
            )
            log(f"{key}: {scenario['readable_rows']:,} readable rows")

        dims = settings.EMBEDDING_DIMENSIONS
        warm_queries = {key: make_queries(s["collection_ids"] or collection_ids, args.queries, rng, dims)
                        for key, s in scenarios.items()}  # fmt: skip
        queries = {key: make_queries(s["collection_ids"] or collection_ids, args.queries, rng, dims)
                   for key, s in scenarios.items()}  # fmt: skip
        storage = storage_report()
        log(f"storage: {storage}")
        indexes = [
            row[0]
            for row in _sql(
                "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'knowledge_chunk'::regclass"
            )
        ]
        warm = prewarm(["knowledge_chunk", *indexes])
        toast = _sql("SELECT reltoastrelid::regclass::text FROM pg_class WHERE relname = 'knowledge_chunk'")[
            0
        ][0]
        if toast:
            warm_toast = prewarm([toast])
            warm["relations"] += warm_toast["relations"]
            warm["bytes"] += warm_toast["bytes"]
            warm["seconds"] = round(warm["seconds"] + warm_toast["seconds"], 1)
        log(f"OS cache prewarm: {warm['bytes'] / 1e9:.1f} GB in {warm['seconds']} s")
        warm["shared_buffers"] = warm_shared_buffers()
        log(f"shared buffers: {warm['shared_buffers']}; warm-up pass")
        for key in scenarios:
            for mode in ("vector", "hybrid"):
                measure_search(users[key], warm_queries[key], mode)

        truth: dict[str, list[list[int]]] = {}
        results: dict[str, Any] = {}
        for key, scenario in scenarios.items():
            log(f"{key}: measuring")
            found, vector_stats = measure_search(users[key], queries[key], "vector")
            _, hybrid_stats = measure_search(users[key], queries[key], "hybrid")
            log(f"{key}: exact ground truth")
            started = time.perf_counter()
            truth[key] = [exact_top(q.vector, scenario["collection_ids"]) for q in queries[key]]
            exact_s = time.perf_counter() - started
            recall = _recall(found, truth[key])
            results[key] = {
                **{k: v for k, v in scenario.items() if k != "collection_ids"},
                "readable_share": round(scenario["readable_rows"] / total_rows, 4),
                "vector": {"recall@10": recall, **vector_stats},
                "hybrid": hybrid_stats,
                "exact_scan_mean_ms": round(1000 * exact_s / len(queries[key]), 1),
                "target_met": {
                    "vector_p95": vector_stats["latency"]["p95_ms"] <= TARGET_P95_MS,
                    "vector_recall@10": recall >= TARGET_RECALL,
                    "hybrid_p95": hybrid_stats["latency"]["p95_ms"] <= TARGET_P95_MS,
                },
            }
            log(f"{key}: {results[key]}")
        result: dict[str, Any] = {
            "benchmark": "search_scale",
            "command": " ".join(["python", "bench/search_scale.py", *sys.argv[1:]]),
            "rows": args.rows,
            "table_rows_total": total_rows,
            "words_per_chunk": args.words,
            "queries_per_scenario": args.queries,
            "k": K,
            "targets": {"p95_ms": TARGET_P95_MS, "recall@10": TARGET_RECALL},
            "load": timings,
            "storage": storage,
            "prewarm": warm,
            "scenarios": results,
            "environment": env,
        }
        if args.alternatives:
            result["alternatives"] = alternatives(
                {k: {"collection_ids": s["collection_ids"]} for k, s in scenarios.items()}, queries, truth
            )
    finally:
        if not args.keep:
            log("cleaning up the bench rows")
            timings.update(cleanup())
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
