"""Ingestion throughput: the real pipeline against the raw speed of the embeddings server.

    python bench/ingest_throughput.py [--limit N] [--via-celery] [--out FILE]

Writes each COVID-QA article as a .txt document into a fresh collection, runs upload and
`document_ingest` end to end, then embeds the very same chunk inputs straight through
`provider.embed` and reports pipeline chunks/s divided by raw chunks/s (target >= 0.8).
In-process runs also report where the pipeline's time went (parse, chunk, embed, database).
By default each document goes through the pipeline and then straight to the server, so on a
shared machine both measurements see the same background load; --sequential runs the whole
pipeline first and the raw pass after it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CITATIONS,
    COVID_COLLECTION,
    bench_superuser,
    collection_reset,
    covid_articles,
    covid_docs,
    emit,
    environment,
    ingest_pending,
    log,
    setup_django,
    timed,
    upload_texts,
    wrap_timed,
)

TARGET_RATIO = 0.8


def _celery_workers() -> list[str]:
    from config.celery import app

    replies = app.control.ping(timeout=2.0) or []
    return [name for reply in replies for name in reply]


def _wait_ready(document_ids: list[int], timeout: float) -> None:
    from knowledge.models import Document

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = dict(Document.objects.filter(pk__in=document_ids).values_list("pk", "status"))
        done = [s for s in statuses.values() if s in {Document.Status.READY, Document.Status.FAILED}]
        if len(done) == len(document_ids):
            failed = [pk for pk, s in statuses.items() if s == Document.Status.FAILED]
            if failed:
                raise RuntimeError(f"documents failed in the worker: {failed}")
            return
        time.sleep(0.5)
    raise TimeoutError(f"documents not ready after {timeout:.0f} s")


def _chunk_inputs(document_ids: list[int]) -> list[str]:
    """The exact strings the pipeline embedded, rebuilt with the pipeline's own functions."""
    from django.conf import settings

    from knowledge.chunking import chunk_document
    from knowledge.models import Document
    from knowledge.parsing import parse_document
    from knowledge.services import embedding_text

    texts: list[str] = []
    for document in Document.objects.filter(pk__in=document_ids).order_by("pk"):
        with document.file.open("rb") as handle:
            parsed = parse_document(handle.read(), document.filename)
        drafts = chunk_document(
            parsed, max_tokens=settings.CHUNK_MAX_TOKENS, overlap_tokens=settings.CHUNK_OVERLAP_TOKENS
        )
        if len(drafts) != document.chunk_count:
            raise RuntimeError(f"document {document.pk}: {len(drafts)} drafts, {document.chunk_count} chunks")
        texts.extend(embedding_text(document, draft) for draft in drafts)
    return texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="number of articles (default: all 98)")
    parser.add_argument("--via-celery", action="store_true", help="enqueue and wait for a running worker")
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="whole pipeline first, then the raw pass (default: per document)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the worker")
    parser.add_argument("--out", help="also write the JSON result to this file")
    args = parser.parse_args()

    setup_django()
    from django.conf import settings

    from gateway import provider
    from knowledge import services
    from knowledge.models import Chunk, Document

    articles = covid_articles(args.limit)
    docs = covid_docs(articles)
    user = bench_superuser()
    env = environment()
    log(f"{len(docs)} articles, {sum(len(d.text) for d in docs):,} characters")

    if args.via_celery:
        workers = _celery_workers()
        if not workers:
            log("no Celery worker answered on the broker; start one or run without --via-celery")
            emit({"benchmark": "ingest_throughput", "error": "no Celery worker answered", "environment": env})
            return 1
        log(f"workers: {workers}")

    provider.embed(["warm-up"], kind="passage")  # load the model before the clock starts
    collection = collection_reset(COVID_COLLECTION)

    raw_embed = provider.embed  # unwrapped, for the raw measurement
    profile: dict[str, float] = {}
    undo = []
    if not args.via_celery:
        undo = [
            wrap_timed(services, "parse_document", profile, "parse"),
            wrap_timed(services, "chunk_document", profile, "chunk"),
            wrap_timed(provider, "embed", profile, "embed_http"),
            wrap_timed(Chunk.objects, "bulk_create", profile, "db_chunk_insert"),
        ]
    interleave = not (args.via_celery or args.sequential)
    load_before = environment()["load_average_1m"]
    raw_s = 0.0
    raw_inputs: list[str] = []
    started = time.perf_counter()
    with timed(profile, "upload"):
        ids = upload_texts(collection, docs, enqueue=args.via_celery)
    if args.via_celery:
        with timed(profile, "ingest"):
            _wait_ready(ids, args.timeout)
    elif not interleave:
        with timed(profile, "ingest"):
            ingest_pending(ids)
    else:
        # Each document through the pipeline, then its inputs straight to the server: on a shared
        # machine both measurements then see the same background load.
        for done, document_id in enumerate(ids, start=1):
            with timed(profile, "ingest"):
                ingest_pending([document_id], label="pipeline", verbose=False)
            texts = _chunk_inputs([document_id])
            raw_started = time.perf_counter()
            raw_embed(texts, kind="passage")  # batches of EMBEDDING_BATCH_SIZE inside
            raw_s += time.perf_counter() - raw_started
            raw_inputs.extend(texts)
            if done % 5 == 0 or done == len(ids):
                log(
                    f"{done}/{len(ids)} documents: pipeline {profile['upload'] + profile['ingest']:.0f} s, "
                    f"raw {raw_s:.0f} s"
                )
    pipeline_s = profile["upload"] + profile["ingest"] if interleave else time.perf_counter() - started
    for restore in undo:
        restore()

    documents = Document.objects.filter(pk__in=ids)
    chunk_count = Chunk.objects.filter(document_id__in=ids).count()
    token_count = sum(documents.values_list("token_count", flat=True))

    if not interleave:
        log("raw embeddings throughput on the same inputs")
        raw_inputs = _chunk_inputs(ids)
        raw_started = time.perf_counter()
        raw_embed(raw_inputs, kind="passage")  # batches of EMBEDDING_BATCH_SIZE inside
        raw_s = time.perf_counter() - raw_started
    texts = raw_inputs
    load_after = environment()["load_average_1m"]

    pipeline_cps = chunk_count / pipeline_s
    raw_cps = len(texts) / raw_s
    ratio = pipeline_cps / raw_cps
    result: dict[str, Any] = {
        "benchmark": "ingest_throughput",
        "command": " ".join(["python", "bench/ingest_throughput.py", *sys.argv[1:]]),
        "mode": "celery" if args.via_celery else "in-process",
        "schedule": "interleaved per document" if interleave else "pipeline first, then raw",
        "dataset": CITATIONS["covid-qa"],
        "documents": len(ids),
        "chunks": chunk_count,
        "characters": sum(len(d.text) for d in docs),
        "estimated_tokens": token_count,
        "chunk_max_tokens": settings.CHUNK_MAX_TOKENS,
        "chunk_overlap_tokens": settings.CHUNK_OVERLAP_TOKENS,
        "pipeline": {
            "seconds": round(pipeline_s, 2),
            "documents_per_s": round(len(ids) / pipeline_s, 3),
            "chunks_per_s": round(pipeline_cps, 3),
        },
        "raw_embeddings": {
            "seconds": round(raw_s, 2),
            "chunks_per_s": round(raw_cps, 3),
            "inputs": len(texts),
            "input_characters": sum(len(t) for t in texts),
        },
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "load_average_1m": {"before": load_before, "after": load_after},
        "user": user.username,
        "environment": env,
    }
    if not args.via_celery:
        accounted = sum(profile.get(k, 0.0) for k in ("parse", "chunk", "embed_http", "db_chunk_insert"))
        other = profile["ingest"] - accounted
        breakdown = {
            "upload_s (hash, store file, document row)": profile["upload"],
            "parse_s": profile.get("parse", 0.0),
            "chunk_s": profile.get("chunk", 0.0),
            "embed_http_s": profile.get("embed_http", 0.0),
            "db_chunk_insert_s": profile.get("db_chunk_insert", 0.0),
            "other_s (claim, progress updates, file read, transaction)": other,
        }
        result["profile"] = {k: round(v, 3) for k, v in breakdown.items()}
        result["profile_share_of_pipeline"] = {
            k.split(" ")[0].removesuffix("_s"): round(v / pipeline_s, 4) for k, v in breakdown.items()
        }
        # Noise-free view: the same run's time inside provider.embed against the whole pipeline.
        result["embed_share_of_pipeline"] = round(profile.get("embed_http", 0.0) / pipeline_s, 4)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
