"""Retrieval quality of `knowledge.selectors.search` against plain baselines, on three sets.

    python bench/retrieval_quality.py [--dataset squad covid drcd] [--max-questions N]
                                      [--covid-articles N] [--drcd-articles N]
                                      [--squad-articles N] [--seed S]
                                      [--resamples R] [--dump FILE] [--out FILE]

SQuAD 2.0 (answerable questions) and DRCD (Traditional Chinese): every paragraph is one document
indexed as ONE chunk, and the relevant chunk is the paragraph the question was asked about.
COVID-QA: whole articles chunked by the real chunker; relevant chunks are those containing the
answer's first character (offsets mapped from the dataset's context onto
`chunking.document_text` of the parsed file).

Documents go through the real pipeline (upload + `document_ingest`) once and are reused on later
runs: an identical upload is a duplicate and already-ready documents are not embedded again.
Query vectors are embedded once and cached in `.data/bench-cache/` (`cached_query_vectors`), and
passed as `query_vector`, so the figures measure retrieval, not HTTP.

Systems, each scored by nDCG@10, recall@5, recall@20 and MRR@10 with 95% intervals from a
bootstrap over documents, and by its paired nDCG@10 difference from plain dense search:
- `search()` as it is (hybrid, k 20), timed;
- plain baselines built outside the product over the same vectors (`plain_baselines`): exact
  cosine in numpy, BM25 in Python, and their reciprocal-rank fusion with k 60;
- candidate fusions replayed over the product's own candidate lists (`candidate_fusions`); the
  replay of the shipped fusion is checked against `search()`'s own rankings.
With more than one set, the systems are ranked across them (`choose`).
"""

from __future__ import annotations

import argparse
import math
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
    DRCD_DEV,
    SQUAD_DEV,
    TextDoc,
    bench_superuser,
    cached_query_vectors,
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
DRCD_COLLECTION = "bench-retrieval-drcd"
# Every SQuAD or DRCD paragraph must be one chunk; the longest is about 1,000 estimated tokens.
PARAGRAPH_CHUNK_MAX_TOKENS = 4000
PARAGRAPH_SETS = {
    "squad": (SQUAD_DEV, SQUAD_COLLECTION, "squad"),
    "drcd": (DRCD_DEV, DRCD_COLLECTION, "drcd"),
}
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


def paragraph_corpus(name: str, max_questions: int, seed: int, articles_limit: int | None = None) -> Corpus:
    """SQuAD 2.0 or DRCD: every paragraph one document of ONE chunk; the relevant chunk is the
    paragraph the question was asked about (SQuAD: answerable questions only)."""
    from django.conf import settings

    from knowledge.models import Chunk

    path, collection_name, prefix = PARAGRAPH_SETS[name]
    data = load_json(path)["data"][:articles_limit]
    docs: list[TextDoc] = []
    keyed: list[tuple[int, list[dict[str, Any]]]] = []
    for a, article in enumerate(data):
        title = article["title"].replace("_", " ")
        for p, paragraph in enumerate(article["paragraphs"]):
            docs.append(TextDoc(f"{prefix}-{a:03d}-{p:03d}.txt", title, paragraph["context"]))
            keyed.append((len(docs) - 1, paragraph["qas"]))
    collection = _collection(collection_name)
    ids = upload_texts(collection, docs, enqueue=False)
    previous = settings.CHUNK_MAX_TOKENS
    settings.CHUNK_MAX_TOKENS = PARAGRAPH_CHUNK_MAX_TOKENS
    try:
        ingest_pending(ids, label=name)
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
        if not qa.get("is_impossible", False)
    ]
    sample = answerable
    if max_questions and len(answerable) > max_questions:
        picked = sorted(random.Random(seed).sample(range(len(answerable)), max_questions))
        sample = [answerable[i] for i in picked]
    return Corpus(
        name=name,
        collection_id=collection.pk,
        documents=len(set(ids)),
        chunks=sum(len(c) for c in chunks_by_doc.values()),
        questions=sample,
        notes={
            "dataset": CITATIONS[name],
            "articles_used": len(data),
            "answerable_questions": len(answerable),
            "questions_used": len(sample),
            "sampling": f"random.Random({seed}).sample" if len(sample) < len(answerable) else "all",
            "paragraphs_split_into_several_chunks": split,
            "chunks_over_512_estimated_tokens (e5 truncates)": over_512,
            "relevance": "the one chunk holding the paragraph the question was asked about",
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


def covid_corpus(max_questions: int | None, articles_limit: int | None = None) -> Corpus:
    from knowledge.chunking import document_text
    from knowledge.models import Chunk, Document
    from knowledge.parsing import parse_document

    articles = covid_articles()
    if articles_limit:
        # The articles with the most questions per character: the most questions per minute of
        # embedding, when a run cannot afford every article.
        articles = sorted(articles, key=lambda a: len(a["context"]) / max(len(a["qas"]), 1))[:articles_limit]
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
    # Articles ingested by other runs stay in the collection as distractors; every system
    # searches all of them.
    chunks = Chunk.objects.filter(collection_id=collection.pk).count()
    return Corpus(
        name="covid",
        collection_id=collection.pk,
        documents=Document.objects.filter(collection_id=collection.pk, status=Document.Status.READY).count(),
        chunks=chunks,
        questions=questions,
        notes={
            "dataset": CITATIONS["covid-qa"],
            "articles_used": len(articles),
            "questions_total": sum(len(a["qas"]) for a in articles),
            "questions_used": len(questions),
            "answer_offsets_corrected (dataset offset 1-3 chars off)": bad_offsets,
            "answers_not_located_in_parsed_text": unmatched,
            "questions_dropped_answer_outside_every_chunk": outside,
            "questions_with_two_relevant_chunks (overlap)": multi,
            "relevance": "chunk(s) whose [char_start, char_end) holds the answer's first character",
        },
    )


# --- the product's candidate lists -------------------------------------------------------------


@dataclass
class Lists:
    """What the product's search ranks for one question, each list best first (CANDIDATES long):
    the vector side, the every-word pass and the BM25 pass over the informative lexemes (not yet
    stripped of the every-word chunks, so that fusions without that pass can be replayed)."""

    vector: list[tuple[int, float]]  # cosine similarity
    every_word: list[tuple[int, float]]  # ts_rank_cd
    bm25: list[tuple[int, float]]
    idf_mass: float  # the lexemes' summed IDF, from the same statement
    lexemes: list[str]
    typed: bool
    readable_rows: int

    def sides(self, pool: int) -> Any:
        """`selectors.keyword_sides(query, plan, pool)` as the product computes it."""
        from knowledge.keywords import KeywordSides

        every = self.every_word[:pool]
        if self.typed or len(every) >= pool or not self.lexemes:
            return KeywordSides(every, [], [], typed=self.typed)
        return KeywordSides(every, self.bm25[:pool], self.lexemes, idf_mass=self.idf_mass)


def product_lists(user: Any, corpus: Corpus) -> list[Lists]:
    """The two sides of `search()` for every question, from the selector's own functions."""
    from django.db import transaction

    from knowledge import keywords, selectors

    ids = selectors.readable_collection_ids(user, [corpus.collection_id])
    out: list[Lists] = []
    for question in corpus.questions:
        plan = selectors._plan(ids)
        with transaction.atomic():
            vector = selectors._vector_candidates(question.vector, plan, CANDIDATES)
            params = {"q": question.text, "ids": plan.collection_ids}
            every = keywords._ranked_matches(
                keywords.keyword_query_sql(), params, CANDIDATES, plan.readable_rows
            )
            typed = bool(keywords._OPERATORS.search(question.text))
            lexemes = [] if typed else keywords.informative_lexemes(question.text, plan.readable_rows)
            bm25, mass = keywords._bm25_matches(lexemes, plan, CANDIDATES) if lexemes else ([], 0.0)
        out.append(
            Lists(
                vector=[(int(c), float(s)) for c, s in vector],
                every_word=[(int(c), float(s)) for c, s in every],
                bm25=[(int(c), float(s)) for c, s in bm25],
                idf_mass=mass,
                lexemes=lexemes,
                typed=typed,
                readable_rows=plan.readable_rows or 0,
            )
        )
    return out


def _run_search(user: Any, corpus: Corpus, k: int) -> tuple[list[list[int]], dict[str, Any]]:
    """The product's hybrid search as it is, timed per question."""
    from knowledge import selectors

    rankings: list[list[int]] = []
    latencies: list[float] = []
    for question in corpus.questions:
        started = time.perf_counter()
        hits = selectors.search(
            user, question.text, k=k, collections=[corpus.collection_id], query_vector=question.vector
        )
        latencies.append(time.perf_counter() - started)
        rankings.append([hit.chunk.pk for hit in hits])
    return rankings, latency_summary(latencies)


# --- plain baselines, outside the product -------------------------------------------------------

# CJK characters: PostgreSQL's parser keeps a run of them as one word, so the plain BM25 indexes
# their overlapping character pairs instead (the usual baseline for Chinese without a segmenter).
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
PLAIN_BM25 = {"k1": 0.9, "b": 0.4}  # Anserini's defaults, as BEIR's BM25 baseline uses


def _cjk_terms(text: str) -> Counter[str]:
    terms: Counter[str] = Counter()
    for run in _CJK.findall(text):
        terms.update([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
    return terms


def _terms(texts: Sequence[str]) -> list[Counter[str]]:
    """Term counts per text: PostgreSQL's English lexemes (stemmed, stopwords out) for every
    word outside CJK scripts, character pairs inside them."""
    from django.db import connection

    counts: list[Counter[str]] = [_cjk_terms(t) for t in texts]
    with connection.cursor() as cursor:
        for start in range(0, len(texts), 500):
            cursor.execute(
                "SELECT t.i, l.lexeme, coalesce(array_length(l.positions, 1), 1) "
                "FROM unnest(%s::text[]) WITH ORDINALITY AS t(text, i), "
                "unnest(to_tsvector('english', t.text)) AS l",
                [list(texts[start : start + 500])],
            )
            for i, lexeme, n in cursor.fetchall():
                if not _CJK.search(lexeme):
                    counts[start + int(i) - 1][lexeme] += int(n)
    return counts


def plain_baselines(corpus: Corpus) -> dict[str, list[list[int]]]:
    """Dense (exact cosine with numpy over the stored e5 vectors), BM25 (Python, `_terms`) and
    their RRF with k 60 over each one's first CANDIDATES, none of it through `search()`."""
    import numpy as np

    from knowledge.models import Chunk

    rows = list(
        Chunk.objects.filter(collection_id=corpus.collection_id)
        .order_by("pk")
        .values_list("pk", "embedding", "text")
    )
    chunk_ids = np.array([r[0] for r in rows])
    matrix = np.array([np.asarray(r[1], dtype=np.float32) for r in rows])
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    queries = np.array([q.vector for q in corpus.questions], dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    dense: list[list[int]] = []
    for start in range(0, len(queries), 512):
        scores = queries[start : start + 512] @ matrix.T
        for row in scores:
            top = np.argsort(-row, kind="stable")[:CANDIDATES]
            dense.append(chunk_ids[top].tolist())

    docs = _terms([r[2] for r in rows])
    lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
    k1, b = PLAIN_BM25["k1"], PLAIN_BM25["b"]
    norm = k1 * (1 - b + b * lengths / max(lengths.mean(), 1.0))
    postings: dict[str, tuple[Any, Any]] = {}
    collect: dict[str, tuple[list[int], list[int]]] = {}
    for index, counts in enumerate(docs):
        for term, n in counts.items():
            entry = collect.setdefault(term, ([], []))
            entry[0].append(index)
            entry[1].append(n)
    for term, (where, tf) in collect.items():
        postings[term] = (np.array(where), np.array(tf, dtype=np.float64))
    total = len(docs)
    bm25: list[list[int]] = []
    for counts in _terms([q.text for q in corpus.questions]):
        scores = np.zeros(total)
        for term in counts:
            if term not in postings:
                continue
            where, tf = postings[term]
            idf = math.log(1 + (total - len(where) + 0.5) / (len(where) + 0.5))
            scores[where] += idf * tf * (k1 + 1) / (tf + norm[where])
        matched = np.flatnonzero(scores)
        top = matched[np.argsort(-scores[matched], kind="stable")][:CANDIDATES]
        bm25.append(chunk_ids[top].tolist())
    rrf = [_rrf([d, k], 60.0) for d, k in zip(dense, bm25, strict=True)]
    return {"plain dense": dense, "plain BM25": bm25, "plain RRF k60": rrf}


def _rrf(rankings: Sequence[Sequence[int]], k: float, weights: Sequence[float] | None = None) -> list[int]:
    scores: dict[int, float] = {}
    for w, ranking in zip(weights or [1.0] * len(rankings), rankings, strict=True):
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + w / (k + rank)
    return [cid for cid, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))]


# --- metrics with intervals ---------------------------------------------------------------------

METRICS = ("ndcg@10", "recall@5", "recall@20", "mrr@10")


def _per_question(ranking: Sequence[int], relevant: set[int]) -> list[float]:
    """nDCG@10 (binary relevance), recall@5 and @20 (a relevant chunk in the top k), MRR@10."""
    dcg = sum(1 / math.log2(rank + 1) for rank, c in enumerate(ranking[:10], start=1) if c in relevant)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), 10) + 1))
    first = next((rank for rank, c in enumerate(ranking[:20], start=1) if c in relevant), None)
    return [
        dcg / ideal,
        float(first is not None and first <= 5),
        float(first is not None),
        1 / first if first is not None and first <= 10 else 0.0,
    ]


@dataclass
class Scorer:
    """Per-question metrics of many rankings of one corpus, with 95% intervals by a cluster
    bootstrap: questions about the same document (a SQuAD or DRCD paragraph, a COVID-QA article)
    are not independent, so whole documents are resampled with replacement."""

    questions: list[Question]
    clusters: Any  # cluster index per question
    weights: Any  # resamples x clusters: how often each document was drawn

    @classmethod
    def build(cls, corpus: Corpus, resamples: int, seed: int) -> Scorer:
        import numpy as np

        from knowledge.models import Chunk

        relevant = {c for q in corpus.questions for c in q.relevant}
        document_of = dict(Chunk.objects.filter(pk__in=relevant).values_list("pk", "document_id"))
        keys = [min(document_of[c] for c in q.relevant) for q in corpus.questions]
        index = {key: i for i, key in enumerate(sorted(set(keys)))}
        clusters = np.array([index[key] for key in keys])
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(len(index), [1 / len(index)] * len(index), size=resamples)
        return cls(corpus.questions, clusters, weights)

    def values(self, rankings: Sequence[Sequence[int]]) -> Any:
        import numpy as np

        return np.array([_per_question(r, q.relevant) for r, q in zip(rankings, self.questions, strict=True)])

    def _boot(self, values: Any, mask: Any = None) -> Any:
        import numpy as np

        mask = np.ones(len(values), dtype=bool) if mask is None else mask
        sums = np.zeros((self.weights.shape[1], values.shape[1]))
        np.add.at(sums, self.clusters[mask], values[mask])
        counts = np.bincount(self.clusters[mask], minlength=self.weights.shape[1])
        drawn = self.weights @ counts
        means = (self.weights @ sums)[drawn > 0] / drawn[drawn > 0][:, None]
        return np.percentile(means, [2.5, 97.5], axis=0)

    def summary(
        self, rankings: Sequence[Sequence[int]], baseline: Any = None, weak_keyword: Any = None
    ) -> dict[str, Any]:
        """Each metric with its interval; against `baseline` (per-question values), the paired
        difference of nDCG@10 with its interval, over all questions and over those where
        `weak_keyword` is true."""
        values = self.values(rankings)
        low, high = self._boot(values)
        out: dict[str, Any] = {
            m: [round(float(values[:, i].mean()), 4), round(float(low[i]), 4), round(float(high[i]), 4)]
            for i, m in enumerate(METRICS)
        }
        if baseline is not None:
            diff = values - baseline
            dlow, dhigh = self._boot(diff)
            out["ndcg@10_minus_plain_dense"] = [
                round(float(diff[:, 0].mean()), 4),
                round(float(dlow[0]), 4),
                round(float(dhigh[0]), 4),
            ]
            if weak_keyword is not None and weak_keyword.any():
                wlow, whigh = self._boot(diff, weak_keyword)
                out["ndcg@10_minus_plain_dense_where_keyword_first_is_wrong"] = [
                    round(float(diff[weak_keyword, 0].mean()), 4),
                    round(float(wlow[0]), 4),
                    round(float(whigh[0]), 4),
                ]
        return out


# --- fusions replayed over the product's lists --------------------------------------------------

POOL = 80  # what search() fuses at k 20: max(4k, 40)


def _ids(hits: Sequence[tuple[int, float]]) -> list[int]:
    return [chunk_id for chunk_id, _ in hits]


def _fused_ranking(vector: Sequence[tuple[int, float]], sides: Any, pool: int, **weights: float) -> list[int]:
    """`selectors.fuse` over these lists, ranked as `search()` ranks, with other weights if given."""
    from knowledge import selectors

    saved = {name: getattr(selectors, name) for name in weights}
    for name, value in weights.items():
        setattr(selectors, name, value)
    try:
        fused = selectors.fuse(vector, sides, pool)
    finally:
        for name, value in saved.items():
            setattr(selectors, name, value)
    return [chunk_id for chunk_id, _ in selectors.ranked(fused)]


def candidate_fusions() -> dict[str, Any]:
    """Fusions to compare, each a function of one question's `Lists` giving a ranking: the
    keyword side's own ranking (no fusion: what mode="keyword" returns), the search of sessions
    4 and 5 (reciprocal rank, k 5), reciprocal rank with k 60 and without the every-word pass,
    rank fusion weighted by the keyword side's coverage of the question, a convex combination of
    normalised scores, and `selectors.fuse` (what `search()` runs now) with its own and other
    weights."""

    def rrf_merged(k: float) -> Any:
        return lambda q: _rrf([_ids(q.vector[:POOL]), _ids(q.sides(POOL).merged(POOL))], k)

    def rrf_bm25(k: float) -> Any:
        return lambda q: _rrf([_ids(q.vector[:POOL]), _ids(q.bm25[:POOL])], k)

    def coverage(q: Lists) -> float:
        return min(1.0, q.bm25[0][1] / q.idf_mass) if q.bm25 and q.idf_mass > 0 else 0.0

    def rrf_weighted(k: float) -> Any:
        # The keyword list weighs as much as its first chunk covers of the question.
        return lambda q: _rrf(
            [_ids(q.vector[:POOL]), _ids(q.sides(POOL).merged(POOL))], k, [1.0, coverage(q)]
        )

    def convex(alpha: float, pool: int = POOL) -> Any:
        def rank(q: Lists) -> list[int]:
            # Cosine min-max normalised over the pool, BM25 over its best: both sides' first = 1.
            vector, bm25 = q.vector[:pool], q.sides(pool).bm25
            if not vector:
                return _ids(bm25)
            top, low = vector[0][1], vector[-1][1]
            scores = {c: alpha * (s - low) / max(top - low, 1e-9) for c, s in vector}
            for c, s in bm25:
                scores[c] = scores.get(c, 0.0) + (1 - alpha) * s / bm25[0][1]
            return [c for c, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))]

        return rank

    def fused(pool: int = POOL, **weights: float) -> Any:
        return lambda q: _fused_ranking(q.vector[:pool], q.sides(pool), pool, **weights)

    systems: dict[str, Any] = {
        "the keyword side alone (every-word pass, then BM25)": lambda q: _ids(q.sides(POOL).merged(POOL)),
        "RRF k5, every-word pass then BM25 (before)": rrf_merged(5),
        "RRF k60, every-word pass then BM25": rrf_merged(60),
        "RRF k5, BM25 only": rrf_bm25(5),
        "RRF k60, BM25 only": rrf_bm25(60),
        "RRF k5, keyword list weighted by its coverage": rrf_weighted(5),
        "RRF k60, keyword list weighted by its coverage": rrf_weighted(60),
        "convex 0.5 cosine (min-max) + 0.5 BM25 (over its best)": convex(0.5),
        "the same convex, pool 40 (search() at k 8)": convex(0.5, 40),
        "fuse (search() now)": fused(),
        "fuse, pool 40 (search() at k 8)": fused(40),
        "fuse without the every-word bonus": fused(EVERY_WORD_BONUS=0.0),
    }
    for weight in (0.05, 0.075, 0.125, 0.15, 0.2):
        systems[f"fuse, keyword weight {weight}"] = fused(KEYWORD_WEIGHT=weight)
    return systems


# --- the run ------------------------------------------------------------------------------------


def evaluate(user: Any, corpus: Corpus, resamples: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One corpus: every system's metrics with intervals, and the per-question values the
    choice across corpora needs."""
    import numpy as np

    started = time.perf_counter()
    vectors = cached_query_vectors(f"retrieval-{corpus.name}", [q.text for q in corpus.questions])
    embed_s = time.perf_counter() - started
    for question, vector in zip(corpus.questions, vectors, strict=True):
        question.vector = vector

    log(f"{corpus.name}: plain baselines")
    plain = plain_baselines(corpus)
    log(f"{corpus.name}: the product's lists")
    lists = product_lists(user, corpus)
    # One warm-up pass so the timed run does not pay for cold caches.
    _run_search(user, Corpus(**{**corpus.__dict__, "questions": corpus.questions[:20]}), 20)
    log(f"{corpus.name}: search() as it is")
    live, latency = _run_search(user, corpus, 20)

    scorer = Scorer.build(corpus, resamples, seed)
    dense_values = scorer.values(plain["plain dense"])
    # The questions where the product's keyword ranking puts a wrong chunk first: what a fusion
    # does to dense search when the keyword side is weak.
    weak = np.array(
        [
            bool(merged) and merged[0] not in q.relevant
            for merged, q in zip(
                (_ids(x.sides(POOL).merged(1)) for x in lists), corpus.questions, strict=True
            )
        ]
    )

    def summary(rankings: Sequence[Sequence[int]]) -> dict[str, Any]:
        return scorer.summary(rankings, dense_values, weak)

    systems: dict[str, Any] = {"search() as it is": summary(live)}
    for name, ranking in plain.items():
        systems[name] = summary(ranking)
    replays: dict[str, list[list[int]]] = {}
    for name, fusion in candidate_fusions().items():
        replays[name] = [fusion(q)[:20] for q in lists]
        systems[name] = summary(replays[name])
    same_as_live = {
        name: round(sum(a == b for a, b in zip(r, live, strict=True)) / len(live), 4)
        for name, r in replays.items()
    }
    vector_top10 = [_ids(q.vector[:10]) for q in lists]
    out = {
        "collection_id": corpus.collection_id,
        "documents": corpus.documents,
        "chunks": corpus.chunks,
        "questions": len(corpus.questions),
        **corpus.notes,
        "query_embedding_seconds (0 when cached)": round(embed_s, 2),
        "search_latency (k 20, query vector given)": latency,
        "product_vector_top10_equals_plain_dense": round(
            sum(a == b[:10] for a, b in zip(vector_top10, plain["plain dense"], strict=True)) / len(lists), 4
        ),
        "replay_equals_search_as_it_is": same_as_live,
        "questions_typed_with_operators": sum(q.typed for q in lists),
        "questions_with_no_informative_lexeme": sum(not q.lexemes and not q.typed for q in lists),
        "questions_with_no_keyword_match": sum(not q.every_word and not q.bm25 for q in lists),
        "questions_where_keyword_first_is_wrong": int(weak.sum()),
        "systems": systems,
    }
    return out, {
        "lists": lists,
        "plain": plain,
        "live": live,
        "relevant": [q.relevant for q in corpus.questions],
        "clusters": scorer.clusters,
    }


def choose(datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Rank the systems by mean nDCG@10 over the corpora, those never worse than plain dense
    search on any corpus (the paired difference's interval not wholly below zero) first."""
    rows = []
    names = next(iter(datasets.values()))["systems"].keys()
    for name in names:
        per = {d: result["systems"][name] for d, result in datasets.items()}
        worse = [d for d, s in per.items() if s["ndcg@10_minus_plain_dense"][2] < 0]
        rows.append(
            {
                "system": name,
                "mean_ndcg@10": round(sum(s["ndcg@10"][0] for s in per.values()) / len(per), 4),
                "ndcg@10": {d: s["ndcg@10"][0] for d, s in per.items()},
                "minus_plain_dense": {d: s["ndcg@10_minus_plain_dense"] for d, s in per.items()},
                "worse_than_plain_dense_on": worse,
            }
        )
    rows.sort(key=lambda r: (bool(r["worse_than_plain_dense_on"]), -r["mean_ndcg@10"]))
    return {"rule": " ".join((choose.__doc__ or "").split()), "ranking": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", nargs="+", choices=["squad", "covid", "drcd"], default=["squad", "covid", "drcd"]
    )
    parser.add_argument(
        "--max-questions",
        type=int,
        default=None,
        help="SQuAD and DRCD: a random sample of N, COVID-QA: the first N (default: every question)",
    )
    parser.add_argument(
        "--covid-articles",
        type=int,
        default=None,
        help="only the N COVID-QA articles with the most questions per character",
    )
    parser.add_argument("--drcd-articles", type=int, default=None, help="only the first N DRCD articles")
    parser.add_argument("--squad-articles", type=int, default=None, help="only the first N SQuAD articles")
    parser.add_argument("--seed", type=int, default=13, help="for a question sample and the bootstrap")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--dump", help="also pickle the per-question lists to this file (for analysis)")
    parser.add_argument("--out", help="also write the JSON result to this file")
    args = parser.parse_args()

    setup_django()
    from knowledge import keywords, selectors

    user = bench_superuser()
    result: dict[str, Any] = {
        "benchmark": "retrieval_quality",
        "command": " ".join(["python", "bench/retrieval_quality.py", *sys.argv[1:]]),
        "environment": environment(),
        "search_settings": {
            name: getattr(module, name)
            for module, names in (
                (selectors, ("KEYWORD_WEIGHT", "EVERY_WORD_BONUS", "EXACT_SCAN_MAX_ROWS")),
                (keywords, ("BM25_K1", "BM25_B")),
            )
            for name in names
        }
        | {"pool": "max(4k, 40)", "k": 20},
        "metrics": (
            "nDCG@10 with binary relevance; recall@k = share of questions with a relevant chunk in the "
            "top k; MRR@10. Each [value, 95% low, 95% high], the interval by a bootstrap over documents "
            "(2,000 resamples unless --resamples); ndcg@10_minus_plain_dense is the paired difference"
        ),
        "plain_baselines": (
            "outside search(): dense = exact cosine in numpy over the stored e5 passage vectors and the "
            f"same query vectors; BM25 = Python, k1 {PLAIN_BM25['k1']}, b {PLAIN_BM25['b']}, over "
            "PostgreSQL's English lexemes (to_tsvector('english'), term counts) plus overlapping "
            f"character pairs of CJK text; RRF k 60 over the first {CANDIDATES} of each"
        ),
        "datasets": {},
    }
    dump: dict[str, Any] = {}
    for name in args.dataset:
        if name == "covid":
            corpus = covid_corpus(args.max_questions, args.covid_articles)
        else:
            limit = args.drcd_articles if name == "drcd" else args.squad_articles
            corpus = paragraph_corpus(name, args.max_questions or 0, args.seed, limit)
        result["datasets"][name], dump[name] = evaluate(user, corpus, args.resamples, args.seed)
    if len(result["datasets"]) > 1:
        result["choice"] = choose(result["datasets"])
    if args.dump:
        import pickle

        Path(args.dump).parent.mkdir(parents=True, exist_ok=True)
        Path(args.dump).write_bytes(pickle.dumps(dump))
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
