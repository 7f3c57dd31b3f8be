"""Retrieval quality of `knowledge.selectors.search`: recall@5, recall@20 and MRR@10 per mode.

    python bench/retrieval_quality.py [--dataset squad|covid|both] [--max-questions N]
                                      [--seed S] [--no-sweep] [--out FILE]

SQuAD 2.0 (answerable questions): every paragraph is one document indexed as ONE chunk, and the
relevant chunk is the paragraph holding the answer. COVID-QA: whole articles chunked by the real
chunker; relevant chunks are those containing the answer's first character (offsets mapped from
the dataset's context onto `chunking.document_text` of the parsed file).

Documents go through the real pipeline (upload + `document_ingest`) once and are reused on later
runs: an identical upload is a duplicate and already-ready documents are not embedded again. The
COVID-QA collection is the one ingest_throughput.py fills, so running that first saves an hour.
Query embeddings are computed up front in batches and passed as `query_vector`, so the figures
measure retrieval, not HTTP.

Unless --no-sweep, the script also replays the fusion offline over candidate lists from the
single-method searches to see which RRF constant, candidate pool, per-method weights and keyword
semantics (OR vs AND) would do best; the replay is checked against the real hybrid results.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CITATIONS,
    COVID_COLLECTION,
    SQUAD_DEV,
    TextDoc,
    bench_superuser,
    covid_articles,
    covid_docs,
    emit,
    environment,
    ingest_pending,
    latency_summary,
    load_json,
    log,
    setup_django,
    upload_texts,
)

SQUAD_COLLECTION = "bench-retrieval-squad"
# Every SQuAD paragraph must be one chunk; the longest is about 1,000 estimated tokens.
SQUAD_CHUNK_MAX_TOKENS = 4000
MODES = ("vector", "keyword", "hybrid")
TARGET_GAIN_POINTS = 3.0
CANDIDATES = 100  # per-method candidate list length fetched for the offline sweep


@dataclass
class Question:
    text: str
    relevant: set[int]  # chunk ids
    vector: list[float] = field(default_factory=list)


@dataclass
class Corpus:
    name: str
    collection_id: int
    documents: int
    chunks: int
    questions: list[Question]
    notes: dict[str, Any]


# --- corpora -----------------------------------------------------------------------------------


def _collection(name: str) -> Any:
    from knowledge import services

    return services.collection_create(name=name)


def squad_corpus(max_questions: int, seed: int) -> Corpus:
    from django.conf import settings

    from knowledge.models import Chunk

    data = load_json(SQUAD_DEV)["data"]
    docs: list[TextDoc] = []
    keyed: list[tuple[int, list[dict[str, Any]]]] = []
    for a, article in enumerate(data):
        title = article["title"].replace("_", " ")
        for p, paragraph in enumerate(article["paragraphs"]):
            docs.append(TextDoc(f"squad-{a:02d}-{p:03d}.txt", title, paragraph["context"]))
            keyed.append((len(docs) - 1, paragraph["qas"]))
    collection = _collection(SQUAD_COLLECTION)
    ids = upload_texts(collection, docs, enqueue=False)
    previous = settings.CHUNK_MAX_TOKENS
    settings.CHUNK_MAX_TOKENS = SQUAD_CHUNK_MAX_TOKENS
    try:
        ingest_pending(ids, label="squad")
    finally:
        settings.CHUNK_MAX_TOKENS = previous

    chunks_by_doc: dict[int, set[int]] = {}
    for chunk_id, document_id in Chunk.objects.filter(document_id__in=ids).values_list("pk", "document_id"):
        chunks_by_doc.setdefault(document_id, set()).add(chunk_id)
    split = sum(1 for chunk_ids in chunks_by_doc.values() if len(chunk_ids) > 1)
    over_512 = Chunk.objects.filter(document_id__in=ids, token_count__gt=512).count()

    answerable = [
        Question(qa["question"], chunks_by_doc[ids[index]])
        for index, qas in keyed
        for qa in qas
        if not qa["is_impossible"]
    ]
    sample = answerable
    if max_questions and len(answerable) > max_questions:
        picked = sorted(random.Random(seed).sample(range(len(answerable)), max_questions))
        sample = [answerable[i] for i in picked]
    return Corpus(
        name="squad",
        collection_id=collection.pk,
        documents=len(set(ids)),
        chunks=sum(len(c) for c in chunks_by_doc.values()),
        questions=sample,
        notes={
            "dataset": CITATIONS["squad"],
            "answerable_questions": len(answerable),
            "questions_used": len(sample),
            "sampling": f"random.Random({seed}).sample" if len(sample) < len(answerable) else "all",
            "paragraphs_split_into_several_chunks": split,
            "chunks_over_512_estimated_tokens (e5 truncates)": over_512,
            "relevance": "the one chunk holding the paragraph with the answer",
        },
    )


def _offset_map(original: str, parsed: str) -> list[int]:
    """For each offset of `original`, the matching offset in `parsed`.

    Parsing only changes whitespace (blank-line paragraphs, trimmed lines) and drops control
    characters, so the non-space characters of `parsed` are those of `original`, in order.
    """
    mapping = [0] * (len(original) + 1)
    j = 0
    for i, char in enumerate(original):
        if char.isspace():
            mapping[i] = j
            continue
        while j < len(parsed) and parsed[j].isspace():
            j += 1
        mapping[i] = j
        if j < len(parsed) and parsed[j] == char:
            j += 1
    mapping[len(original)] = len(parsed)
    return mapping


def _nearest(text: str, needle: str, around: int) -> int:
    found = []
    index = text.find(needle)
    while index != -1:
        found.append(index)
        index = text.find(needle, index + 1)
    return min(found, key=lambda i: abs(i - around)) if found else around


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def covid_corpus(max_questions: int | None) -> Corpus:
    from knowledge.chunking import document_text
    from knowledge.models import Chunk, Document
    from knowledge.parsing import parse_document

    articles = covid_articles()
    collection = _collection(COVID_COLLECTION)
    ids = upload_texts(collection, covid_docs(articles), enqueue=False)
    ingest_pending(ids, label="covid")

    questions: list[Question] = []
    bad_offsets = 0
    unmatched = 0
    outside = 0
    multi = 0
    for article, document_id in zip(articles, ids, strict=True):
        document = Document.objects.get(pk=document_id)
        with document.file.open("rb") as handle:
            parsed_text = document_text(parse_document(handle.read(), document.filename))
        mapping = _offset_map(article["context"], parsed_text)
        spans = list(
            Chunk.objects.filter(document_id=document_id).values_list("pk", "char_start", "char_end")
        )
        for qa in article["qas"]:
            answer = qa["answers"][0]
            start = answer["answer_start"]
            if article["context"][start : start + len(answer["text"])] != answer["text"]:
                # A few hundred offsets in the dataset are off by 1-3 characters: take the
                # occurrence of the answer text nearest to the stated offset.
                bad_offsets += 1
                start = _nearest(article["context"], answer["text"], start)
            while start < len(article["context"]) and article["context"][start].isspace():
                start += 1  # an answer span that begins with a space or line break
            mapped = mapping[min(start, len(article["context"]))]
            located = parsed_text[mapped : mapped + len(answer["text"]) + 50]
            if not _squash(located).startswith(_squash(answer["text"])[:40]):
                unmatched += 1
            relevant = {pk for pk, lo, hi in spans if lo <= mapped < hi}
            if not relevant:
                outside += 1
                continue
            multi += len(relevant) > 1
            questions.append(Question(qa["question"], relevant))
    total = len(questions)
    if max_questions and total > max_questions:
        questions = questions[:max_questions]
    chunks = Chunk.objects.filter(document_id__in=ids).count()
    return Corpus(
        name="covid",
        collection_id=collection.pk,
        documents=len(ids),
        chunks=chunks,
        questions=questions,
        notes={
            "dataset": CITATIONS["covid-qa"],
            "questions_total": sum(len(a["qas"]) for a in articles),
            "questions_used": len(questions),
            "answer_offsets_corrected (dataset offset 1-3 chars off)": bad_offsets,
            "answers_not_located_in_parsed_text": unmatched,
            "questions_dropped_answer_outside_every_chunk": outside,
            "questions_with_two_relevant_chunks (overlap)": multi,
            "relevance": "chunk(s) whose [char_start, char_end) holds the answer's first character",
        },
    )


# --- evaluation --------------------------------------------------------------------------------


def _metrics(rankings: Sequence[Sequence[int]], questions: Sequence[Question]) -> dict[str, float]:
    def first_hit(ranking: Sequence[int], relevant: set[int]) -> int | None:
        for rank, chunk_id in enumerate(ranking, start=1):
            if chunk_id in relevant:
                return rank
        return None

    ranks = [first_hit(r, q.relevant) for r, q in zip(rankings, questions, strict=True)]
    n = len(ranks)
    return {
        "recall@5": round(sum(1 for r in ranks if r is not None and r <= 5) / n, 4),
        "recall@20": round(sum(1 for r in ranks if r is not None and r <= 20) / n, 4),
        "mrr@10": round(sum(1 / r for r in ranks if r is not None and r <= 10) / n, 4),
    }


def _gain_interval(
    hybrid: Sequence[Sequence[int]],
    single: Sequence[Sequence[int]],
    questions: Sequence[Question],
    *,
    resamples: int = 2000,
    seed: int = 7,
) -> list[float]:
    """A 95% interval of hybrid's recall@5 gain over `single`, in points, by a paired cluster
    bootstrap: questions about the same document (SQuAD: the same paragraph; COVID-QA: the same
    article) are not independent, so whole documents are resampled with replacement, each
    question keeping its pair of outcomes."""
    from knowledge.models import Chunk

    relevant = {chunk_id for q in questions for chunk_id in q.relevant}
    document_of = dict(Chunk.objects.filter(pk__in=relevant).values_list("pk", "document_id"))
    clusters: dict[int, list[int]] = {}
    for h, s, q in zip(hybrid, single, questions, strict=True):
        diff = int(bool(set(h[:5]) & q.relevant)) - int(bool(set(s[:5]) & q.relevant))
        clusters.setdefault(min(document_of.get(c, -c) for c in q.relevant), []).append(diff)
    groups = [(sum(d), len(d)) for d in clusters.values()]
    rng = random.Random(seed)
    gains = []
    for _ in range(resamples):
        picked = rng.choices(groups, k=len(groups))
        gains.append(100 * sum(g for g, _ in picked) / sum(n for _, n in picked))
    gains.sort()
    return [round(gains[int(0.025 * resamples)], 2), round(gains[int(0.975 * resamples) - 1], 2)]


def _run_search(user: Any, corpus: Corpus, mode: str, k: int) -> tuple[list[list[int]], dict[str, Any]]:
    from knowledge import selectors

    rankings: list[list[int]] = []
    latencies: list[float] = []
    plans: list[Any] = []
    for question in corpus.questions:
        started = time.perf_counter()
        hits = selectors.search(
            user,
            question.text,
            k=k,
            collections=[corpus.collection_id],
            query_vector=question.vector,
            mode=mode,
            plan_out=plans,
        )
        latencies.append(time.perf_counter() - started)
        rankings.append([hit.chunk.pk for hit in hits])
    strategies = Counter(plan.strategy or "none" for plan in plans) if mode != "keyword" else {}
    return rankings, {"latency": latency_summary(latencies), "vector_strategies": dict(strategies)}


def _fuse(
    vector: Sequence[int], keyword: Sequence[int], *, rrf_k: float, pool: int, wv: float, wk: float, k: int
) -> list[int]:
    scores: dict[int, float] = {}
    for weight, ranking in ((wv, vector), (wk, keyword)):
        for rank, chunk_id in enumerate(ranking[:pool], start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (rrf_k + rank)
    return [cid for cid, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]]


RARE_SQL = (
    "SELECT id, ts_rank_cd(search_vector, t.q, 32) AS rank FROM knowledge_chunk, "
    "(SELECT array_to_string(ARRAY(SELECT quote_literal(l) FROM unnest(%(lexemes)s::text[]) AS l), ' | ')"
    "::tsquery AS q) AS t WHERE collection_id = ANY(%(ids)s) AND search_vector @@ t.q "
    "ORDER BY rank DESC, id LIMIT %(limit)s"
)


def _keyword_rare(corpus: Corpus, max_share: float) -> list[list[int]]:
    """ORed words as now, but only those in at most `max_share` of the chunks (an IDF cut-off).

    ts_rank_cd has no notion of how common a word is, so a frequent word ORed in matches and
    ranks a large share of the collection; dropping such words is what BM25's IDF does in
    effect. When every word is common, the two rarest are kept.
    """
    from django.db import connection

    from knowledge import selectors

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT word, ndoc FROM ts_stat(%s)",
            [f"SELECT search_vector FROM knowledge_chunk WHERE collection_id = {int(corpus.collection_id)}"],
        )
        df = dict(cursor.fetchall())
        limit = max_share * corpus.chunks
        rankings: list[list[int]] = []
        for question in corpus.questions:
            cursor.execute(
                "SELECT DISTINCT unnest(tsvector_to_array(to_tsvector('english', %(q)s) || "
                "to_tsvector(%(neutral)s::regconfig, %(q)s)))",
                {"q": question.text, "neutral": _neutral_config(selectors.keyword_query_sql())},
            )
            lexemes = sorted((row[0] for row in cursor.fetchall()), key=lambda w: df.get(w, 0))
            kept = [w for w in lexemes if df.get(w, 0) <= limit] or lexemes[:2]
            cursor.execute(RARE_SQL, {"lexemes": kept, "ids": [corpus.collection_id], "limit": CANDIDATES})
            rankings.append([row[0] for row in cursor.fetchall()])
    return rankings


def _neutral_config(sql: str) -> str:
    """The language-neutral configuration the selector's keyword SQL uses for the query."""
    configs = re.findall(r"websearch_to_tsquery\('([a-z_]+)'", sql)
    return next((c for c in configs if c != "english"), "simple")


def _sweep(user: Any, corpus: Corpus, hybrid_real: list[list[int]]) -> dict[str, Any]:
    """Replay RRF over long single-method candidate lists with other parameters."""
    from knowledge import selectors

    vector, _ = _run_search(user, corpus, "vector", CANDIDATES)
    keyword: dict[str, list[list[int]]] = {}
    # The selector's own keyword side: every word first, then informative words ORed.
    keyword["selector"], _ = _run_search(user, corpus, "keyword", CANDIDATES)
    original = selectors._OPERATORS
    selectors._OPERATORS = re.compile("")  # always "typed operators": websearch AND semantics
    try:
        keyword["and"], _ = _run_search(user, corpus, "keyword", CANDIDATES)
    finally:
        selectors._OPERATORS = original
    for share in (0.02, 0.05, 0.1):
        keyword[f"or_df<={share:.0%}"] = _keyword_rare(corpus, share)

    def score(ranking: list[list[int]], **params: Any) -> dict[str, float]:
        fused = [_fuse(v, kw, k=20, **params) for v, kw in zip(vector, ranking, strict=True)]
        return _metrics(fused, corpus.questions)

    # The replay must reproduce the real search (k=20 there: pool max(4k, 40) = 80).
    rrf = selectors.RRF_K
    replay = [
        _fuse(v, kw, rrf_k=rrf, pool=80, wv=1, wk=1, k=20)
        for v, kw in zip(vector, keyword["selector"], strict=True)
    ]
    agreement = sum(a == b for a, b in zip(replay, hybrid_real, strict=True)) / len(replay)

    grid: list[dict[str, Any]] = []
    for kw_name, ranking in keyword.items():
        for rrf_k in (1, 5, 10, 20, 30, 60, 100):
            for pool in (10, 20, 40, 80, 100):
                for wv, wk in ((1, 1), (1, 0.5), (1, 0.75), (0.75, 1), (0.5, 1), (1, 0.25)):
                    row = {"keyword": kw_name, "rrf_k": rrf_k, "pool": pool, "w_vector": wv, "w_keyword": wk}
                    grid.append(row | score(ranking, rrf_k=rrf_k, pool=pool, wv=wv, wk=wk))
    grid.sort(key=lambda r: (-r["recall@5"], -r["mrr@10"]))

    def pick(kw: str, rrf_k: int, pool: int, wv: float = 1, wk: float = 1) -> dict[str, Any]:
        return next(
            r
            for r in grid
            if (r["keyword"], r["rrf_k"], r["pool"], r["w_vector"], r["w_keyword"])
            == (kw, rrf_k, pool, wv, wk)
        )

    best_by_keyword = {name: next(r for r in grid if r["keyword"] == name) for name in keyword}
    return {
        "replay_matches_real_hybrid": round(agreement, 4),
        "keyword_alone": {
            name: _metrics(ranking, corpus.questions)
            | {"questions_with_no_keyword_hit": sum(1 for r in ranking if not r)}
            for name, ranking in keyword.items()
        },
        "baseline (selector, its rrf_k, pool 80, weights 1/1)": pick("selector", rrf, 80),
        "hybrid_with_each_keyword_variant (its rrf_k, pool 80, weights 1/1)": {
            name: pick(name, rrf, 80) for name in keyword
        },
        "best_per_keyword_variant": best_by_keyword,
        "best_10": grid[:10],
        "by_rrf_k (selector, pool 80, weights 1/1)": [
            pick("selector", rrf_k, 80) for rrf_k in (1, 5, 10, 20, 30, 60, 100)
        ],
        "by_pool (selector, its rrf_k, weights 1/1)": [
            pick("selector", rrf, pool) for pool in (10, 20, 40, 80, 100)
        ],
        "by_weights (selector, its rrf_k, pool 80)": [
            r for r in grid if r["keyword"] == "selector" and r["rrf_k"] == rrf and r["pool"] == 80
        ],
        "grid_size": len(grid),
    }


def evaluate(user: Any, corpus: Corpus, sweep: bool) -> dict[str, Any]:
    from gateway import provider

    log(f"{corpus.name}: embedding {len(corpus.questions)} queries")
    started = time.perf_counter()
    vectors = provider.embed([q.text for q in corpus.questions], kind="query").vectors
    embed_s = time.perf_counter() - started
    for question, vector in zip(corpus.questions, vectors, strict=True):
        question.vector = vector

    # One warm-up pass so the first mode measured does not pay for cold caches.
    _run_search(user, Corpus(**{**corpus.__dict__, "questions": corpus.questions[:20]}), "hybrid", 20)
    results: dict[str, Any] = {}
    rankings: dict[str, list[list[int]]] = {}
    for mode in MODES:
        log(f"{corpus.name}: mode {mode}")
        rankings[mode], extra = _run_search(user, corpus, mode, 20)
        results[mode] = _metrics(rankings[mode], corpus.questions) | extra
    best_single = max(results["vector"]["recall@5"], results["keyword"]["recall@5"])
    gain = round(100 * (results["hybrid"]["recall@5"] - best_single), 2)
    better = "vector" if results["vector"]["recall@5"] >= results["keyword"]["recall@5"] else "keyword"
    out: dict[str, Any] = {
        "collection_id": corpus.collection_id,
        "documents": corpus.documents,
        "chunks": corpus.chunks,
        "questions": len(corpus.questions),
        **corpus.notes,
        "query_embedding": {
            "seconds": round(embed_s, 2),
            "queries_per_s": round(len(corpus.questions) / embed_s, 2),
        },
        "modes": results,
        "hybrid_gain_recall@5_points": gain,
        "hybrid_gain_95%_interval": _gain_interval(rankings["hybrid"], rankings[better], corpus.questions),
        "target_gain_points": TARGET_GAIN_POINTS,
        "target_met": gain >= TARGET_GAIN_POINTS,
    }
    if sweep:
        log(f"{corpus.name}: fusion sweep")
        out["sweep"] = _sweep(user, corpus, rankings["hybrid"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["squad", "covid", "both"], default="both")
    parser.add_argument(
        "--max-questions",
        type=int,
        default=None,
        help="SQuAD: a random sample of N, COVID-QA: the first N (default: every question)",
    )
    parser.add_argument("--seed", type=int, default=13, help="for a SQuAD question sample")
    parser.add_argument("--no-sweep", action="store_true", help="skip the offline fusion parameter sweep")
    parser.add_argument("--out", help="also write the JSON result to this file")
    args = parser.parse_args()

    setup_django()
    from knowledge import selectors

    user = bench_superuser()
    result: dict[str, Any] = {
        "benchmark": "retrieval_quality",
        "command": " ".join(["python", "bench/retrieval_quality.py", *sys.argv[1:]]),
        "environment": environment(),
        "search_settings": {
            "RRF_K": selectors.RRF_K,
            "pool": "max(4k, 40)",
            "EXACT_SCAN_MAX_ROWS": selectors.EXACT_SCAN_MAX_ROWS,
            "k": 20,
        },
        "metrics": "recall@k = share of questions with a relevant chunk in the top k; MRR@10",
        "datasets": {},
    }
    if args.dataset in {"squad", "both"}:
        corpus = squad_corpus(args.max_questions or 0, args.seed)
        result["datasets"]["squad"] = evaluate(user, corpus, not args.no_sweep)
    if args.dataset in {"covid", "both"}:
        corpus = covid_corpus(args.max_questions)
        result["datasets"]["covid"] = evaluate(user, corpus, not args.no_sweep)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
