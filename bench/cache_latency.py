"""A cache hit's latency against a miss's, through the real services on PostgreSQL, in one run.

Knowledge: CDC FAQ answers from COVID-QA (faq_covidbert.csv), one document each, indexed with the
configured (real) embedding server. Questions: the FAQ's own questions; paraphrases: their
"similar" partners from eval_question_similarity_en.csv.

- miss: `cache_lookup` (misses, embeds the question) + the full answer pipeline
  (`assistant.pipeline.run_to_answer`: real retrieval with a real query embedding, prompt, model
  call, JSON validation, grounding check) + saving the Answer (`cache_store` runs after the timer,
  as the product's after-commit task does). The chat model is a
  fake that answers instantly from source [1] unless --real-chat (the shared local llama server):
  the miss figure is then the pipeline's floor, and a real model adds seconds.
- exact hit: `cache_lookup` of the same question (normalised text match, no embedding) + saving
  the new Answer that records the hit (`CacheHit.answer_fields()`).
- semantic hit: the paraphrase, (a) with the query vector given, as when the pipeline shares the
  embedding it makes for retrieval, and (b) with `cache_lookup` embedding it itself; + saving.

--filler N adds N more cached entries (random vectors, real chunks) so the lookup searches a table
of realistic size. Runs in a throw-away database on the configured PostgreSQL server, dropped at
the end. Prints one JSON object.

    nice -n 19 python bench/cache_latency.py [--questions 30] [--filler 5000] [--real-chat]

Data: COVID-QA (deepset-ai/COVID-QA), Apache-2.0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    cdc_faq,
    cdc_faq_pairs,
    emit,
    environment,
    faq_doc,
    ingest_pending,
    latency_summary,
    log,
    setup_django,
    throwaway_database,
    upload_texts,
)

CITATION = "COVID-QA (deepset-ai/COVID-QA: faq_covidbert.csv, eval_question_similarity_en.csv), Apache-2.0"
SOURCE_ONE = re.compile(r"\[1\] \([^\n]*\)\n(.+?)(?:\n\n\[2\] |\Z)", re.S)


def _data(limit: int) -> tuple[list[tuple[str, list[str], str]], list[tuple[str, str]]]:
    """(question, its paraphrases, FAQ answer) for FAQ questions with a paraphrase, and the pairs
    the dataset marks as *not* similar (question, other question), a false-hit check."""
    answers = cdc_faq()
    paraphrases: dict[str, list[str]] = {}
    different: list[tuple[str, str]] = []
    for question, other, similar in cdc_faq_pairs(answers):
        if similar:
            paraphrases.setdefault(question, []).append(other)
        else:
            different.append((question, other))
    rows = [(q, list(dict.fromkeys(p)), answers[q]) for q, p in paraphrases.items()][:limit]
    kept = {q for q, _, _ in rows}
    return rows, [(q, o) for q, o in different if q in kept]


def _fake_chat_stream(messages: Sequence[dict[str, Any]], **kwargs: Any) -> Iterator[Any]:
    """An instant model that answers with the first sentence of source [1], citing it."""
    from gateway import provider

    match = SOURCE_ONE.search(str(messages[-1]["content"]))
    first = re.split(r"(?<=[.!?])\s", match.group(1).strip())[0] if match else ""
    content = json.dumps(
        {
            "answer": f"{first} [1]" if first else "",
            "citations": [1] if first else [],
            "confidence": 0.9,
            "not_found": not first,
            "follow_ups": [],
        }
    )
    yield provider.StreamDelta(content)
    yield provider.ChatResult(
        content=content,
        model="fake-instant",
        usage=provider.Usage(prompt_tokens=800, completion_tokens=40),
        latency_ms=0.0,
        system_fingerprint=None,
        finish_reason="stop",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=100, help="FAQ questions (92 have paraphrases)")
    parser.add_argument("--filler", type=int, default=5000)
    parser.add_argument("--real-chat", action="store_true", help="misses call the real chat model")
    parser.add_argument("--out")
    args = parser.parse_args()
    setup_django()

    with throwaway_database("bench_cache"):
        result = _run(args)
    emit(result, args.out)


class _Statements:
    """A connection.execute_wrapper that times every SQL statement of the block it wraps."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, float]] = []

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.calls.append((sql, params, time.perf_counter() - began))


def _profile(lookups: list[tuple[float, list[tuple[str, Any, float]]]]) -> dict[str, Any]:
    """Statements per lookup, time in SQL and in Python, and the slowest statement kinds."""
    if not lookups:
        return {}
    by_kind: dict[str, list[float]] = {}
    for _, calls in lookups:
        for sql, _, seconds in calls:
            kind = " ".join(sql.split()[:8])[:90]
            by_kind.setdefault(kind, []).append(seconds)
    sql_s = [sum(c[2] for c in calls) for _, calls in lookups]
    python_s = [total - in_sql for (total, _), in_sql in zip(lookups, sql_s, strict=True)]
    return {
        "statements_per_lookup": round(sum(len(c) for _, c in lookups) / len(lookups), 2),
        "sql": latency_summary(sql_s),
        "python": latency_summary(python_s),
        "statements": {
            kind: {"count": len(times), "mean_ms": round(1000 * sum(times) / len(times), 2)}
            for kind, times in sorted(by_kind.items(), key=lambda kv: -sum(kv[1]))
        },
    }


def _explain(sql: str, params: Any, *, index_scans: bool = True) -> list[str]:
    """EXPLAIN ANALYZE of a statement; without `index_scans`, as the planner would run it with no
    index scan (the HNSW index unused: an exact scan of the filtered rows)."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        if not index_scans:
            cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return [_shorten(row[0]) for row in cursor.fetchall()]


def _shorten(line: str) -> str:
    return re.sub(r"'\[[-0-9.e,]{80,}\]'", "'[...]'", line)


def _time_statement(sql: str, params: Any, *, repeat: int, index_scans: bool = True) -> dict[str, float]:
    from django.db import connection, transaction

    times = []
    with transaction.atomic(), connection.cursor() as cursor:
        if not index_scans:
            cursor.execute("SET LOCAL enable_indexscan = off")
        for _ in range(repeat):
            began = time.perf_counter()
            cursor.execute(sql, params)
            cursor.fetchall()
            times.append(time.perf_counter() - began)
    return latency_summary(times)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connection

    from answer_cache import services as cache
    from answer_cache.models import CachedAnswer
    from assistant import pipeline
    from assistant import services as assistant_services
    from assistant.models import Answer
    from gateway import provider
    from knowledge import selectors as knowledge_selectors
    from knowledge import services as knowledge
    from knowledge.models import Chunk

    rows, different = _data(args.questions)
    log(f"{len(rows)} FAQ questions, {sum(len(p) for _, p, _ in rows)} paraphrases")
    from django.contrib.auth.models import User

    user = User.objects.create_user(username="bench-reader", password="unused-" + str(random.random()))
    collection = knowledge.collection_create(name="bench-cache-faq")
    collection.reader_users.add(user)
    docs = [faq_doc(i, question, answer) for i, (question, _, answer) in enumerate(rows)]
    ingest_pending(upload_texts(collection, docs, enqueue=False), label="FAQ")
    assistant = assistant_services.assistant_default()
    assistant.collections.set([collection])
    assistant.min_similarity = 0.0  # every question is answered (and can be cached) in this bench
    assistant.save(update_fields=["min_similarity"])
    # What the pipeline asks once per turn and hands to the cache (assistant.pipeline.retrieval.readable).
    readable = knowledge_selectors.readable_collection_ids(user, [collection.pk])

    if not args.real_chat:
        provider.chat_stream = _fake_chat_stream  # type: ignore[assignment]
    # The product stores an answer in the cache after the commit, in a Celery task the user does
    # not wait for (assistant.services.answer_bookkeeping_enqueue); this stack runs no worker, so
    # the bench does that work itself, after each miss's timer.
    deferred: list[dict[str, Any]] = []

    def enqueue(**kwargs: Any) -> None:
        tracker = kwargs.pop("tracker")
        deferred.append({**kwargs, "call_ids": list(tracker.call_ids) if tracker is not None else []})

    assistant_services.answer_bookkeeping_enqueue = enqueue  # type: ignore[assignment]

    def bookkeep() -> None:
        while deferred:
            assistant_services.answer_bookkeeping(**deferred.pop(0))

    misses: list[float] = []
    stored = 0
    not_cached: dict[str, int] = {}
    cross_hits: list[dict[str, Any]] = []
    for question, _, _ in rows:
        began = time.perf_counter()
        early = cache.cache_lookup(user=user, assistant=assistant, question=question, history=[])
        if early is not None:
            # Another FAQ question, cached earlier in this loop, is this close: reported, not timed.
            cross_hits.append(
                {"question": question, "served": early.question, "similarity": early.similarity}
            )
            continue
        done = pipeline.run_to_done(assistant=assistant, user=user, question=question)
        answer = assistant_services.answer_save(
            answer=done.answer, query_vector=done.query_vector, history=done.history
        )
        misses.append(time.perf_counter() - began)
        bookkeep()
        if not CachedAnswer.objects.filter(answer=answer).exists():
            reason = cache.cacheable_reason(answer)
            not_cached[reason] = not_cached.get(reason, 0) + 1
        else:
            stored += 1
    log(f"{len(misses)} misses, {stored} answers cached ({not_cached or 'all'})")
    real_entries = set(CachedAnswer.objects.values_list("pk", flat=True))

    if args.filler:
        vectors = list(CachedAnswer.objects.values_list("embedding", flat=True))
        _fill(
            args.filler,
            assistant,
            user,
            list(Chunk.objects.values_list("pk", "document_id")[:50]),
            [list(v) for v in vectors],
        )

    def record(hit: Any, question: str) -> None:
        Answer.objects.create(user=user, question=question, **hit.answer_fields())

    exact: list[float] = []
    for question, _, _ in rows:
        began = time.perf_counter()
        hit = cache.cache_lookup(
            user=user, assistant=assistant, question=question.upper(), history=[], readable=readable
        )
        if hit is not None:
            record(hit, question)
            exact.append(time.perf_counter() - began)

    embed_times: list[float] = []
    shared: list[float] = []
    own: list[float] = []
    through_pipeline: list[float] = []
    profiled: list[tuple[float, list[tuple[str, Any, float]]]] = []
    similarities: list[float] = []
    wrong: list[dict[str, Any]] = []
    lookups = 0
    nearest_statement: tuple[str, Any] | None = None
    for question, paraphrases, _ in rows:
        for paraphrase in paraphrases:
            lookups += 1
            began = time.perf_counter()
            vector = provider.embed([paraphrase], kind="query").vectors[0]
            embed_times.append(time.perf_counter() - began)
            statements = _Statements()
            began = time.perf_counter()
            with connection.execute_wrapper(statements):
                hit = cache.cache_lookup(
                    user=user,
                    assistant=assistant,
                    question=paraphrase,
                    history=[],
                    query_vector=vector,
                    readable=readable,
                )
            looked_up = time.perf_counter() - began
            if hit is None:
                continue
            if hit.kind != "semantic":
                continue  # the paraphrase is the question again, up to the exact key
            if hit.entry.pk not in real_entries or hit.answer.question != question:
                wrong.append({"question": paraphrase, "served": hit.question, "similarity": hit.similarity})
            record(hit, paraphrase)
            shared.append(time.perf_counter() - began)
            profiled.append((looked_up, statements.calls))
            similarities.append(hit.similarity)
            if nearest_statement is None:
                nearest_statement = next(((q, v) for q, v, _ in statements.calls if "<=>" in q), None)
            began = time.perf_counter()
            hit = cache.cache_lookup(
                user=user, assistant=assistant, question=paraphrase, history=[], readable=readable
            )
            if hit is not None:
                record(hit, paraphrase)
                own.append(time.perf_counter() - began)
            # The product's path: exact key, embedding, retrieval, input checks, semantic lookup,
            # saving the hit. A miss here (should not happen: same vector) is not saved.
            began = time.perf_counter()
            done = pipeline.run_to_done(assistant=assistant, user=user, question=paraphrase)
            if done.answer.cache_hit:
                assistant_services.answer_save(answer=done.answer)
                through_pipeline.append(time.perf_counter() - began)
            bookkeep()

    false_pairs = 0
    for _, other in different:
        hit = cache.cache_lookup(
            user=user, assistant=assistant, question=other, history=[], readable=readable
        )
        if hit is not None and hit.kind == "semantic":
            false_pairs += 1
            wrong.append({"question": other, "served": hit.question, "similarity": hit.similarity})

    plans: dict[str, Any] = {}
    if nearest_statement:
        plans = {
            "planner_choice": _explain(*nearest_statement),
            "no_index_scans": _explain(*nearest_statement, index_scans=False),
            "timed_planner_choice": _time_statement(*nearest_statement, repeat=50),
            "timed_no_index_scans": _time_statement(*nearest_statement, repeat=50, index_scans=False),
        }
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT avg(pg_column_size(embedding)), avg(pg_column_size(e.*)), "  # noqa: S608
            f"pg_relation_size(reltoastrelid) FROM {CachedAnswer._meta.db_table} e, pg_class "
            f"WHERE relname = %s GROUP BY reltoastrelid",
            [CachedAnswer._meta.db_table],
        )
        column, row_size, toast = cursor.fetchone()

    def met(values: list[float]) -> bool:
        return bool(values) and latency_summary(values)["p95_ms"] <= 50

    return {
        "benchmark": "cache_latency",
        "dataset": CITATION,
        "chat_model": "real: " + settings.CHAT_MODEL if args.real_chat else "fake, instant (no model time)",
        "embedding_model": settings.EMBEDDING_MODEL,
        "questions": len(rows),
        "paraphrases": lookups,
        "cached": stored,
        "not_cached": not_cached,
        "cache_entries_searched": CachedAnswer.objects.count(),
        "hits_between_different_faq_questions": cross_hits,
        "threshold": settings.ANSWER_CACHE_SIMILARITY,
        "match_rule": dataclasses.asdict(cache.MatchRule.from_settings()),
        "miss_full_pipeline": latency_summary(misses),
        "exact_hit_end_to_end": latency_summary(exact),
        "semantic_hit_shared_vector": latency_summary(shared),
        "semantic_hit_embedding_itself": latency_summary(own),
        "semantic_hit_through_pipeline": latency_summary(through_pipeline),
        "query_embedding_alone": latency_summary(embed_times),
        "semantic_lookup_profile": _profile(profiled),
        "nearest_query": plans,
        "embedding_bytes": float(column),
        "entry_row_bytes": float(row_size),
        "toast_bytes": int(toast),
        "semantic_hit_rate_on_paraphrases": round(len(shared) / lookups, 3) if lookups else None,
        "paraphrase_similarity_min": min(similarities) if similarities else None,
        "dissimilar_pairs": len(different),
        "dissimilar_pairs_served": false_pairs,
        "wrong_hits": wrong,
        "target_hit_p95_ms": 50,
        "target_met_exact": met(exact),
        "target_met_semantic_shared_vector": met(shared),
        "target_met_semantic_embedding_itself": met(own),
        "target_met_semantic_through_pipeline": met(through_pipeline),
        "environment": environment(),
    }


def _fill(
    count: int, assistant: Any, user: Any, chunks: list[tuple[int, int]], near: list[list[float]]
) -> None:
    """`count` more entries, each with its own (saved) answer, in the reader's scope (as most of
    an assistant's entries are: its readers mostly read the same collections). Their vectors are
    real entries' plus noise (cosine ~0.8 to it: e5-like neighbours, never a hit at 0.96)."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from answer_cache.models import CachedAnswer
    from answer_cache.services import scope_key
    from answer_cache.text import text_hash
    from assistant.models import Answer

    rng = random.Random(5)
    scope = scope_key(user, assistant)
    dims = settings.EMBEDDING_DIMENSIONS
    noise = 0.75 / dims**0.5  # |noise| ~0.75: cosine 1/sqrt(1 + 0.75^2) = 0.8
    started = time.perf_counter()
    answers = Answer.objects.bulk_create(
        [
            Answer(
                assistant=assistant,
                user=user,
                question=f"filler question {i}",
                text="filler",
                grounded=True,
                model="filler",
                temperature=0.0,
                top_p=1.0,
                max_tokens=1,
                prompt=assistant.prompt,
            )
            for i in range(count)
        ],
        batch_size=1000,
    )
    expires = timezone.now() + timedelta(days=1)
    entries = []
    for i, answer in enumerate(answers):
        base = near[i % len(near)] if near else [0.0] * dims
        vector = [x + rng.gauss(0, noise if near else 1.0) for x in base]
        norm = sum(x * x for x in vector) ** 0.5
        chunk, document = chunks[i % len(chunks)]
        entries.append(
            CachedAnswer(
                assistant=assistant,
                answer=answer,
                question=f"filler question {i}",
                question_hash=text_hash(f"filler question {i}"),
                scope_key=scope,
                embedding=[x / norm for x in vector],
                chunk_ids=[chunk],
                document_ids=[document],
                expires_at=expires,
            )
        )
    CachedAnswer.objects.bulk_create(entries, batch_size=500)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {CachedAnswer._meta.db_table}")  # noqa: S608
    log(f"{count} filler entries in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
