"""What the app adds to a chat turn beyond the model's own time, with an instant fake model.

    python bench/chat_overhead.py [--rows 10000] [--questions 100] [--keep] [--reuse] [--sql] [--out FILE]
    python bench/chat_overhead.py --scale-rows [--questions 100]   # over search_scale.py's 1M rows

Loads synthetic chunks (clustered 384-d vectors, text from search_scale.py's vocabulary) by
binary COPY into one collection, `bench-overhead`, under one READY Document whose chunk_count
matches, so `search()` sees the real row count and picks its real strategy (exact below
EXACT_SCAN_MAX_ROWS readable rows, HNSW above). Then, in-process, `gateway.provider` is replaced
by instant deterministic fakes (embed: a vector where a passage of one of the topics would lie,
plus noise, seeded by a hash of the text; chat_stream: a valid answer JSON quoting source [1], in
a few deltas), and each question goes through `services.message_send` + a full drain of
`services.answer_stream`.

With --scale-rows nothing is loaded: the assistant answers from search_scale.py's 20 collections
(run `search_scale.py --rows 1000000 --keep [--collection-indexes]` first), whose vectors share
this script's topic centres, so the turn searches a million chunks.

Overhead per turn = wall time of send + drain minus the fake model's own time (microseconds).
The answer's bookkeeping task (its calls' link and cache entry, queued after the commit) runs
in-process after each turn's timer and is reported apart as "deferred_bookkeeping".
Per-stage figures come from the saved Answer.latency_ms ("retrieval", "model", "total");
"save" is the end-to-end time minus the pipeline's total (claim, lock, history, saving the
Answer and its message, the stop checks). Questions are asked in conversations of five turns,
so history lookup and follow-up retrieval queries are part of the figure.

`--sql` also counts the SQL statements of each measured turn (connection.execute_wrapper) with
their time, grouped by statement shape, split into those before the last event reached the
caller and those after it (work the user does not wait for).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    bench_superuser,
    emit,
    environment,
    latency_summary,
    log,
    percentile,
    setup_django,
    wrap_timed,
)

COLLECTION = "bench-overhead"
SCALE_PREFIX = "bench-scale-"  # search_scale.py's collections (the same topic centres, seed 7)
SQL_SHAPE = re.compile(r"'[^']*'|\"s\d+_x\d+\"|\b\d+(\.\d+)?\b|\[[^\]]*\]")
TURNS_PER_CONVERSATION = 5
WARMUP = 10
TARGET_P95_MS = 100.0
SEED = 7


class FakeModel:
    """Instant stand-ins for gateway.provider's chat, chat_stream and embed; keeps its own time."""

    def __init__(self, centres: Any, bases: Any, dims: int) -> None:
        self.centres = centres
        self.bases = bases
        self.dims = dims
        self.seconds = 0.0
        self.calls = {"embed": 0, "chat": 0, "chat_stream": 0}

    def _vector(self, text: str) -> list[float]:
        import numpy as np

        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        rng = np.random.default_rng(seed)
        # Where a passage of a topic would lie (as load() places chunks), plus a question's own
        # noise, as search_scale.py's queries: a question is near some passages. The topic's
        # centre itself would be the one point equally near all of them, the hardest possible
        # query for an HNSW graph and unlike a real question.
        topic = int(rng.integers(len(self.centres)))
        rank = self.bases.shape[2]
        spread = rng.standard_normal(rank) * (0.8 / math.sqrt(rank))
        vector = self.centres[topic] + self.bases[topic] @ spread
        vector += rng.standard_normal(self.dims) * (0.46 / math.sqrt(self.dims))  # 0.3 and 0.35
        vector /= np.linalg.norm(vector)
        return [float(x) for x in vector]

    def embed(self, texts: Sequence[str], *, kind: str, model: str | None = None) -> Any:
        from django.conf import settings

        from gateway import provider

        started = time.perf_counter()
        self.calls["embed"] += 1
        result = provider.Embeddings(
            vectors=[self._vector(t) for t in texts],
            model=model or settings.EMBEDDING_MODEL,
            usage=provider.Usage(prompt_tokens=sum(len(t.split()) for t in texts)),
            latency_ms=0.0,
        )
        self.seconds += time.perf_counter() - started
        self._notify("embed", result.model, result.usage)
        return result

    @staticmethod
    def _notify(kind: str, model: str, usage: Any) -> None:
        """Tell the provider's listeners, as the real calls do: cost accounting is app overhead."""
        from gateway import provider

        provider.notify(
            provider.CallRecord(
                kind=kind,  # type: ignore[arg-type]
                model=model,
                purpose=provider.current_purpose(),
                usage=usage,
                latency_ms=0.0,
            )
        )

    @staticmethod
    def _content(messages: Sequence[dict[str, Any]]) -> str:
        # Quote the start of source [1] so the grounding check has a supported claim to find.
        user = str(messages[-1].get("content", ""))
        match = re.search(r"^\[1\] \([^\n]*\)\n(.+)$", user, re.M)
        words = (match.group(1) if match else "the sources say little").split()[:14]
        return json.dumps(
            {
                "answer": " ".join(words) + " [1].",
                "citations": [1],
                "confidence": 0.8,
                "not_found": False,
                "follow_ups": ["What else do the sources say about this topic?"],
            }
        )

    def _result(self, content: str) -> Any:
        from django.conf import settings

        from gateway import provider

        return provider.ChatResult(
            content=content,
            model=settings.CHAT_MODEL,
            usage=provider.Usage(prompt_tokens=500, completion_tokens=40),
            latency_ms=0.0,
            system_fingerprint="fp_bench_fake",
            finish_reason="stop",
        )

    def chat(self, messages: Sequence[dict[str, Any]], **kwargs: Any) -> Any:
        started = time.perf_counter()
        self.calls["chat"] += 1
        result = self._result(self._content(messages))
        self.seconds += time.perf_counter() - started
        self._notify("chat", result.model, result.usage)
        return result

    def chat_stream(self, messages: Sequence[dict[str, Any]], **kwargs: Any) -> Iterator[Any]:
        from gateway import provider

        started = time.perf_counter()
        self.calls["chat_stream"] += 1
        content = self._content(messages)
        size = max(1, len(content) // 6)
        pieces = [content[i : i + size] for i in range(0, len(content), size)]
        result = self._result(content)
        self.seconds += time.perf_counter() - started
        for piece in pieces:
            yield provider.StreamDelta(piece)
        self._notify("chat_stream", result.model, result.usage)
        yield result


class SqlLog:
    """connection.execute_wrapper: every statement's shape and wall time, while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.rows: list[tuple[str, float]] = []

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not self.on:
            return execute(sql, params, many, context)
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.rows.append((self.shape(sql), time.perf_counter() - started))

    @staticmethod
    def shape(sql: str) -> str:
        text = " ".join(SQL_SHAPE.sub("?", sql).split())
        return text[:110]


def load(rows: int, words: int, seed: int, timings: dict[str, Any]) -> None:
    """One collection, one READY document, `rows` chunks by binary COPY."""
    import numpy as np
    from django.conf import settings
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb

    from bench.search_scale import _raw, _topics, _vocabulary
    from knowledge import services
    from knowledge.models import Collection, Document

    dims = settings.EMBEDDING_DIMENSIONS
    rng = np.random.default_rng(seed)
    centres, bases, topic_words = _topics(rng, dims)
    vocab = np.array(_vocabulary(), dtype=object)
    existing = Collection.objects.filter(name=COLLECTION).first()
    if existing is not None:
        _raw().execute("DELETE FROM knowledge_chunk WHERE collection_id = %s", [existing.pk])
        existing.documents.all().delete()
        existing.delete()
    collection = services.collection_create(name=COLLECTION, description="chat_overhead.py synthetic data")
    document = Document.objects.create(
        collection=collection,
        title="Synthetic handbook",
        filename="synthetic-handbook.txt",
        file="",
        size_bytes=0,
        sha256="f" * 64,
        status=Document.Status.READY,
        chunk_count=rows,
        token_count=rows * words,
        progress=100,
    )
    raw = _raw()
    register_vector(raw)
    columns = (
        "document_id, collection_id, position, text, heading_path, page, char_start, char_end, "
        "token_count, embedding"
    )
    types = ["int8", "int8", "int4", "text", "jsonb", "int4", "int4", "int4", "int4", "vector"]
    log(f"COPY {rows:,} rows into {COLLECTION}")
    started = time.perf_counter()
    block = 50
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY knowledge_chunk ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(types)
        for start in range(0, rows, block):
            n = min(block, rows - start)
            topic = int(rng.integers(len(centres)))
            spread = rng.standard_normal((n, bases.shape[2])).astype(np.float32) * (
                0.8 / math.sqrt(bases.shape[2])
            )
            vectors = centres[topic] + spread @ bases[topic].T
            vectors += rng.standard_normal((n, dims)).astype(np.float32) * (0.3 / math.sqrt(dims))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            ids = np.where(
                rng.random((n, words)) < 0.4,
                topic_words[topic][rng.integers(0, topic_words.shape[1], size=(n, words))],
                rng.integers(0, len(vocab), size=(n, words)),
            )
            for i in range(n):
                text = " ".join(vocab[ids[i]])
                heading = Jsonb([f"Section {(start + i) // 200}", f"Topic {topic}"])
                copy.write_row(
                    (document.pk, collection.pk, start + i, text, heading, None, 0, len(text),
                     words * 13 // 10, vectors[i])
                )  # fmt: skip
    timings["copy_s"] = round(time.perf_counter() - started, 1)
    with raw.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE knowledge_chunk")


def questions(n: int, seed: int) -> list[str]:
    """Questions in words from the chunks' vocabulary: the keyword side finds matches too."""
    import numpy as np

    from bench.search_scale import _vocabulary

    rng = np.random.default_rng(seed + 1)
    vocab = _vocabulary()
    out = []
    for i in range(n):
        a, b, c = (vocab[int(j)] for j in rng.integers(0, len(vocab), size=3))
        out.append(f"What does the handbook say about {a} {b} and {c}? (q{i})")
    return out


def _counts(values: list[int]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values, default=0)}


def _sql_summary(turns: list[dict[str, Any]], shapes: dict[str, list[float]]) -> dict[str, Any]:
    n = max(1, len(turns))
    return {
        "statements_per_turn": _counts([t["statements"] for t in turns]),
        "statements_before_last_event_per_turn": _counts([t["before_last_event"] for t in turns]),
        "sql_time_per_turn": latency_summary([t["seconds"] for t in turns]),
        "sql_time_before_last_event_per_turn": latency_summary(
            [t["seconds_before_last_event"] for t in turns]
        ),
        "by_shape": [
            {
                "per_turn": round(len(times) / n, 2),
                "ms_per_turn": round(sum(times) * 1000 / n, 2),
                "p50_ms": round(percentile([t * 1000 for t in times], 50), 2),
                "sql": shape,
            }
            for shape, times in sorted(shapes.items(), key=lambda kv: -sum(kv[1]))
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--words", type=int, default=120)
    parser.add_argument("--reuse", action="store_true", help="keep already-loaded rows of the same size")
    parser.add_argument("--keep", action="store_true", help="do not delete the rows at the end")
    parser.add_argument(
        "--scale-rows",
        action="store_true",
        help="ask over search_scale.py's kept rows (its 20 collections) instead of loading any",
    )
    parser.add_argument("--sql", action="store_true", help="count and time the SQL statements per turn")
    parser.add_argument("--out")
    args = parser.parse_args()
    setup_django()

    import numpy as np
    from django.conf import settings

    from assistant import services
    from assistant.models import Answer, Conversation
    from bench.search_scale import _raw, _topics
    from gateway import provider
    from knowledge import selectors
    from knowledge.models import Chunk, Collection, Document

    user = bench_superuser()
    timings: dict[str, Any] = {}
    present = Document.objects.filter(collection__name=COLLECTION).values_list("chunk_count", flat=True)
    scale = list(Collection.objects.filter(name__startswith=SCALE_PREFIX).order_by("name"))
    if args.scale_rows:
        if not scale:
            parser.error("--scale-rows needs search_scale.py's rows: run it with --keep first")
        log(f"asking over search_scale.py's {len(scale)} collections")
    elif (
        args.reuse
        and list(present) == [args.rows]
        and Chunk.objects.filter(collection__name=COLLECTION).count() == args.rows
    ):
        log(f"reusing {args.rows:,} rows")
    else:
        load(args.rows, args.words, SEED, timings)
    total_chunks = Chunk.objects.count()

    # The same centres and within-topic directions as the rows (load() draws them first from SEED).
    centres, bases, _ = _topics(np.random.default_rng(SEED), settings.EMBEDDING_DIMENSIONS)
    dims = settings.EMBEDDING_DIMENSIONS
    fake = FakeModel(np.asarray(centres, dtype=np.float64), np.asarray(bases, dtype=np.float64), dims)
    originals = {name: getattr(provider, name) for name in ("embed", "chat", "chat_stream")}
    for name in originals:
        setattr(provider, name, getattr(fake, name))

    assistant = services.assistant_default()
    saved_settings = (assistant.min_similarity, assistant.tools_enabled)
    # The fake's vectors are near topic centres, not copies of chunks: never abstain on similarity.
    assistant.min_similarity, assistant.tools_enabled = -1.0, False
    assistant.save(update_fields=["min_similarity", "tools_enabled"])
    collection = None if args.scale_rows else Collection.objects.get(name=COLLECTION)
    saved_collections = list(assistant.collections.values_list("pk", flat=True))
    assistant.collections.set(scale if collection is None else [collection])

    plans: list[selectors.SearchPlan] = []
    original_search = selectors.search

    def search_with_plan(*a: Any, **kw: Any) -> Any:
        kw.setdefault("plan_out", plans)
        return original_search(*a, **kw)

    selectors.search = search_with_plan  # type: ignore[assignment]
    # Where the time goes inside a turn: each wrapped function adds its wall time to `spent`.
    from assistant import grounding
    from assistant.pipeline import generation, prompting
    from assistant.pipeline import guard as pipeline_guard

    spent: dict[str, float] = {}
    undo = [
        wrap_timed(services, "message_send", spent),
        wrap_timed(services, "history_before", spent),
        wrap_timed(services, "_answer_save", spent, "answer_save"),
        wrap_timed(selectors, "readable_collection_ids", spent),
        wrap_timed(selectors, "_vector_candidates", spent, "vector_sql"),
        wrap_timed(selectors, "keyword_sides", spent, "keyword_sql"),
        # Each pipeline module that calls them holds its own name for them.
        *(wrap_timed(m, "messages", spent, "prompt_build") for m in (prompting, generation, pipeline_guard)),
        *(wrap_timed(m, "parse_payload", spent, "json_validate") for m in (generation, prompting)),
        wrap_timed(grounding, "check", spent, "grounding_check"),
    ]
    steps: dict[str, list[float]] = {}
    # The answer's bookkeeping (calls' link, cache store) is a Celery task queued after the commit;
    # no worker runs here, so each turn's is run in-process after its timer stops, and timed apart.
    queued: list[dict[str, Any]] = []
    deferred: list[float] = []
    bookkeep = getattr(importlib.import_module("assistant.tasks"), "answer_bookkeep", None)
    if bookkeep is not None:
        bookkeep_delay = bookkeep.delay
        bookkeep.delay = lambda **kwargs: queued.append(kwargs)
    from django.db import connection

    sql_log = SqlLog()
    sql_turns: list[dict[str, Any]] = []
    sql_shapes: dict[str, list[float]] = {}
    sql_context = connection.execute_wrapper(sql_log) if args.sql else None
    if sql_context is not None:
        sql_context.__enter__()

    asked = questions(WARMUP + args.questions, SEED)
    end_to_end: list[float] = []
    overhead: list[float] = []
    first_delta: list[float] = []
    stages: dict[str, list[float]] = {"retrieval": [], "total": [], "model": [], "save": []}
    outcomes = {"grounded": 0, "flagged": 0, "abstained": 0, "fallback": 0, "failed": 0}
    conversation_ids: list[int] = []
    try:
        conversation = None
        for i, question in enumerate(asked):
            if i % TURNS_PER_CONVERSATION == 0:
                conversation = services.conversation_create(user=user, assistant=assistant)
                conversation_ids.append(conversation.pk)
            assert conversation is not None
            fake_before = fake.seconds
            spent_before = dict(spent)
            sql_log.rows, sql_log.on = [], args.sql
            started = time.perf_counter()
            _, pending = services.message_send(conversation=conversation, text=question)
            first: float | None = None
            failed = False
            stream = services.answer_stream(message=pending)
            statements_before_last = 0
            for event in stream:
                if first is None and type(event).__name__ == "Delta":
                    first = time.perf_counter() - started
                if isinstance(event, services.Failed):
                    failed = True
                statements_before_last = len(sql_log.rows)
            elapsed = time.perf_counter() - started
            sql_log.on = False
            began_deferred = time.perf_counter()
            while queued:
                bookkeep.apply(kwargs=queued.pop(0))
            deferred_s = time.perf_counter() - began_deferred
            if i < WARMUP:
                continue
            if bookkeep is not None:
                deferred.append(deferred_s)
            if args.sql:
                rows = sql_log.rows
                sql_turns.append(
                    {
                        "statements": len(rows),
                        "seconds": sum(t for _, t in rows),
                        "before_last_event": statements_before_last,
                        "seconds_before_last_event": sum(t for _, t in rows[:statements_before_last]),
                    }
                )
                for shape, seconds in rows:
                    sql_shapes.setdefault(shape, []).append(seconds)
            if failed:
                outcomes["failed"] += 1
                continue
            answer = Answer.objects.get(message=pending)
            for key, value in spent.items():
                steps.setdefault(key, []).append(value - spent_before.get(key, 0.0))
            model_s = fake.seconds - fake_before
            end_to_end.append(elapsed)
            overhead.append(elapsed - model_s)
            if first is not None:
                first_delta.append(first)
            latency = answer.latency_ms
            stages["retrieval"].append(latency.get("retrieval", 0.0) / 1000)
            stages["model"].append(latency.get("model", 0.0) / 1000)
            stages["total"].append(latency.get("total", 0.0) / 1000)
            stages["save"].append(elapsed - latency.get("total", 0.0) / 1000)
            for key, value in latency.items():
                if key not in stages and isinstance(value, int | float):
                    stages.setdefault(f"answer.{key}", []).append(value / 1000)
            outcomes["grounded"] += int(bool(answer.grounded))
            outcomes["flagged"] += int(answer.flagged)
            outcomes["abstained"] += int(answer.abstained)
            outcomes["fallback"] += int(answer.fallback)
            done = i + 1 - WARMUP
            if done % 20 == 0:
                log(f"{done}/{args.questions} questions; p50 so far {percentile(overhead, 50) * 1000:.1f} ms")
    finally:
        if sql_context is not None:
            sql_context.__exit__(None, None, None)
        if bookkeep is not None:
            bookkeep.delay = bookkeep_delay
        for restore in undo:
            restore()
        selectors.search = original_search  # type: ignore[assignment]
        for name, function in originals.items():
            setattr(provider, name, function)
        assistant.min_similarity, assistant.tools_enabled = saved_settings
        assistant.save(update_fields=["min_similarity", "tools_enabled"])
        # Another bench script may have deleted a collection meanwhile: restore the ones left.
        assistant.collections.set(Collection.objects.filter(pk__in=saved_collections))
        Conversation.objects.filter(pk__in=conversation_ids).delete()
        if not args.keep and collection is not None:
            _raw().execute("DELETE FROM knowledge_chunk WHERE collection_id = %s", [collection.pk])
            Document.objects.filter(collection=collection).delete()
            collection.delete()

    strategies: dict[str, int] = {}
    for plan in plans:
        strategies[plan.strategy] = strategies.get(plan.strategy, 0) + 1
    p95 = percentile([s * 1000 for s in overhead], 95)
    result = {
        "benchmark": "chat_overhead",
        "rows": total_chunks if args.scale_rows else args.rows,
        "scale_rows": args.scale_rows,
        "chunks_in_table": total_chunks,
        "questions": len(overhead),
        "warmup_questions": WARMUP,
        "turns_per_conversation": TURNS_PER_CONVERSATION,
        "top_k": assistant.top_k,
        "search_strategy": strategies,
        "readable_rows_seen_by_search": plans[-1].readable_rows if plans else None,
        "load": timings,
        "fake_model_calls": fake.calls,
        "fake_model_seconds_total": round(fake.seconds, 4),
        "overhead": latency_summary(overhead),
        "end_to_end": latency_summary(end_to_end),
        "first_delta": latency_summary(first_delta),
        "deferred_bookkeeping": latency_summary(deferred) if deferred else None,
        "stages_from_answer_latency_ms": {k: latency_summary(v) for k, v in stages.items()},
        "steps": {k: latency_summary(v) for k, v in sorted(steps.items())},
        "outcomes": outcomes,
        "sql": _sql_summary(sql_turns, sql_shapes) if args.sql else None,
        "target_p95_ms": TARGET_P95_MS,
        "target_met": bool(p95 <= TARGET_P95_MS),
        "environment": environment(),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
