"""Ingestion throughput: the real pipeline against the raw speed of the embeddings server.

    python bench/ingest_throughput.py [--docs covid-articles|short-passages] [--limit N]
                                      [--wave N] [--sequential] [--raw-single] [--one-per-call]
                                      [--via-celery] [--out FILE]

Uploads each document as a .txt file into a fresh collection, runs upload and the ingest task
end to end, then embeds the very same chunk inputs straight through `provider.embed` (in
batches of EMBEDDING_BATCH_SIZE across documents: the server's own speed) and reports pipeline
chunks/s divided by raw chunks/s (target >= 0.8).

Two document sets:
- `covid-articles` (default): COVID-QA's 98 long scientific articles (about 26 chunks each).
- `short-passages`: 1,856 passages of one chunk or so each, each its own document: every
  paragraph of the SQuAD 2.0 dev half (646, English Wikipedia), every answer of COVID-QA's CDC
  FAQ (210, titled by its question) and every DRCD dev paragraph (1,000, Traditional Chinese),
  shuffled with a fixed seed so a --limit keeps the mix.

In-process runs call the Celery task's own function (`ingest_document.apply`) for each document,
as a worker would, and report where the pipeline's time went (parse, chunk, embed, SQL). With
--via-celery the documents are queued and a running worker indexes them.

The documents go through in waves (--wave, default 1 article or 100 passages; with --via-celery
and articles, the whole set): each wave through the pipeline, then its chunk inputs straight to
the server, so on a shared machine both measurements see the same background load.
--sequential runs the whole pipeline first and the raw pass after it. --raw-single also sends
each wave's inputs one text per request (what the pipeline sent for one-chunk documents before
they were batched together), to show how much the server gains from batches at the time.
--one-per-call (in-process) indexes each wave a second time one document per call, the old
request pattern, so the grouping's gain is measured on the same texts under the same load.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CDC_FAQ,
    CITATIONS,
    COVID_COLLECTION,
    DATASETS,
    SQUAD_DEV,
    TextDoc,
    bench_superuser,
    collection_reset,
    covid_articles,
    covid_docs,
    emit,
    environment,
    load_json,
    log,
    setup_django,
    timed,
    upload_texts,
    wrap_timed,
)

TARGET_RATIO = 0.8
DRCD_DEV = DATASETS / "drcd" / "DRCD_dev.json"
PASSAGES_COLLECTION = "bench-ingest-short-passages"
PASSAGE_CITATIONS = [
    CITATIONS["squad"],
    "COVID-QA CDC FAQ (deepset-ai/COVID-QA, faq_covidbert.csv), Apache-2.0",
    "DRCD dev (DRCKnowledgeTeam/DRCD, DRCD_dev.json), CC BY-SA 3.0",
]


def short_passages(limit: int | None) -> list[TextDoc]:
    """Every SQuAD dev-half paragraph, CDC FAQ answer and DRCD dev paragraph as its own document
    (titled by its article, or by its question), in a fixed shuffled order."""
    docs: list[TextDoc] = []
    for article in load_json(SQUAD_DEV)["data"]:
        for paragraph in article["paragraphs"]:
            title = article["title"].replace("_", " ")
            docs.append(TextDoc(f"squad-{len(docs):04}.txt", title, paragraph["context"]))
    seen: set[str] = set()
    with CDC_FAQ.open(newline="") as handle:
        for row in csv.DictReader(handle):
            question, answer = row["question"].strip(), row["answer"].strip()
            if question and answer and answer not in seen:  # identical answers would be duplicates
                seen.add(answer)
                docs.append(TextDoc(f"faq-{len(seen):03}.txt", question[:300], answer))
    drcd = [(a["title"], p["context"]) for a in load_json(DRCD_DEV)["data"] for p in a["paragraphs"]]
    docs.extend(TextDoc(f"drcd-{number:04}.txt", title, text) for number, (title, text) in enumerate(drcd))
    random.Random(16).shuffle(docs)
    return docs[:limit] if limit else docs


def _celery_workers() -> list[str]:
    from config.celery import app

    replies = app.control.ping(timeout=2.0) or []
    return [name for reply in replies for name in reply]


def _wait_done(document_ids: list[int], timeout: float) -> None:
    from knowledge.models import Document

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = dict(Document.objects.filter(pk__in=document_ids).values_list("pk", "status"))
        done = [s for s in statuses.values() if s in {Document.Status.READY, Document.Status.FAILED}]
        if len(done) == len(set(document_ids)):
            return
        time.sleep(0.1)  # waves are short; a coarse poll would add its own wait to each
    raise TimeoutError(f"documents not ready after {timeout:.0f} s")


def _ingest_in_process(document_ids: list[int]) -> None:
    """What a worker does for each queued document, in this process: the task's own function."""
    from knowledge.tasks import ingest_document

    for document_id in document_ids:
        ingest_document.apply(args=(document_id,), throw=True)


def _check_ready(document_ids: list[int]) -> None:
    from knowledge.models import Document

    bad = list(
        Document.objects.filter(pk__in=document_ids)
        .exclude(status=Document.Status.READY)
        .values_list("pk", "status", "error")
    )
    if bad:
        raise RuntimeError(f"{len(bad)} documents not ready, for instance {bad[:3]}")


def _chunk_inputs(document_ids: list[int]) -> list[str]:
    """The exact strings the pipeline embedded, rebuilt with the pipeline's own functions."""
    from django.conf import settings

    from knowledge.chunking import chunk_document
    from knowledge.models import Document
    from knowledge.parsing import parse_document
    from knowledge.services import embedding_text

    by_pk = {d.pk: d for d in Document.objects.filter(pk__in=document_ids)}
    texts: list[str] = []
    for document_id in dict.fromkeys(document_ids):  # upload order, duplicates once
        document = by_pk[document_id]
        with document.file.open("rb") as handle:
            parsed = parse_document(handle.read(), document.filename)
        drafts = chunk_document(
            parsed, max_tokens=settings.CHUNK_MAX_TOKENS, overlap_tokens=settings.CHUNK_OVERLAP_TOKENS
        )
        if len(drafts) != document.chunk_count:
            raise RuntimeError(f"document {document.pk}: {len(drafts)} drafts, {document.chunk_count} chunks")
        texts.extend(embedding_text(document, draft) for draft in drafts)
    return texts


@contextmanager
def _sql_timer(into: dict[str, float]) -> Iterator[None]:
    """Time and count every SQL statement run in this process during the block."""
    from django.db import connection

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        into["sql_statements"] = into.get("sql_statements", 0) + 1
        with timed(into, "sql"):
            return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield


def _wrap_embed(provider: Any, into: dict[str, float]) -> Callable[[], None]:
    """Time `provider.embed` and count the HTTP requests it makes (one per EMBEDDING_BATCH_SIZE)."""
    from django.conf import settings

    undo = wrap_timed(provider, "embed", into, "embed_http")
    timed_embed = provider.embed

    def counting(texts: Sequence[str], **kwargs: Any) -> Any:
        requests = -(-len(texts) // settings.EMBEDDING_BATCH_SIZE)
        into["embed_requests"] = into.get("embed_requests", 0) + requests
        into["embed_texts"] = into.get("embed_texts", 0) + len(texts)
        return timed_embed(texts, **kwargs)

    provider.embed = counting
    return undo


def _server_cpu() -> Callable[[], float] | None:
    """CPU seconds used so far by the embedded embeddings server (from its pid file), or None when
    the server is not ours to see. CPU time, unlike wall time, barely depends on how busy the
    machine is: it shows what each request shape costs the server itself."""
    import os

    from django.conf import settings

    pid_file = Path(settings.DATA_DIR) / "run" / "embeddings.pid"
    try:
        stat = Path(f"/proc/{int(pid_file.read_text().strip())}/stat")
        stat.read_text()
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")

    def used() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    return used


def _waves(items: Sequence[TextDoc], size: int) -> Iterator[Sequence[TextDoc]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", choices=["covid-articles", "short-passages"], default="covid-articles")
    parser.add_argument("--limit", type=int, default=None, help="number of documents (default: all)")
    parser.add_argument("--via-celery", action="store_true", help="enqueue and wait for a running worker")
    parser.add_argument(
        "--wave",
        type=int,
        default=None,
        help="documents per pipeline-then-raw wave (default: 1 article, 100 passages; all with "
        "--via-celery and articles)",
    )
    parser.add_argument(
        "--sequential", action="store_true", help="whole pipeline first, then the raw pass (one wave)"
    )
    parser.add_argument(
        "--raw-single",
        action="store_true",
        help="also embed each wave's inputs one text per request: how much the server gains from batches",
    )
    parser.add_argument(
        "--one-per-call",
        action="store_true",
        help="in-process: also index each wave again one document per call (services.document_ingest), "
        "the request pattern of the ingest task before small documents were grouped",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the worker per wave")
    parser.add_argument("--out", help="also write the JSON result to this file")
    args = parser.parse_args()

    setup_django()
    from django.conf import settings
    from django.test import override_settings

    from gateway import provider
    from knowledge import services
    from knowledge.models import Chunk, Document

    if args.docs == "covid-articles":
        docs = covid_docs(covid_articles(args.limit))
        collection_name, dataset = COVID_COLLECTION, CITATIONS["covid-qa"]
        default_wave = len(docs) if args.via_celery else 1
    else:
        docs = short_passages(args.limit)
        collection_name, dataset = PASSAGES_COLLECTION, "; ".join(PASSAGE_CITATIONS)
        default_wave = 100
    wave_size = len(docs) if args.sequential else max(1, args.wave or default_wave)
    user = bench_superuser()
    env = environment()
    log(f"{len(docs)} {args.docs}, {sum(len(d.text) for d in docs):,} characters, waves of {wave_size}")

    if args.via_celery and args.one_per_call:
        parser.error("--one-per-call runs in-process only")
    if args.via_celery:
        workers = _celery_workers()
        if not workers:
            log("no Celery worker answered on the broker; start one or run without --via-celery")
            emit({"benchmark": "ingest_throughput", "error": "no Celery worker answered", "environment": env})
            return 1
        log(f"workers: {workers}")

    provider.embed(["warm-up"], kind="passage")  # load the model before the clock starts
    collection = collection_reset(collection_name)

    raw_embed = provider.embed  # unwrapped, for the raw measurement
    profile: dict[str, float] = {}
    undo = []
    if not args.via_celery:
        undo = [
            wrap_timed(services, "parse_document", profile, "parse"),
            wrap_timed(services, "chunk_document", profile, "chunk"),
            _wrap_embed(provider, profile),
        ]
    load_before = environment()["load_average_1m"]
    pipeline_s = raw_s = single_s = alone_s = alone_requests = 0.0
    ids: list[int] = []
    raw_inputs: list[str] = []
    server_cpu = _server_cpu()
    cpu_s = {"pipeline": 0.0, "raw": 0.0, "single": 0.0, "one_per_call": 0.0}

    def cpu_mark() -> float:
        return server_cpu() if server_cpu else 0.0

    for wave in _waves(docs, wave_size):
        mark = cpu_mark()
        started = time.perf_counter()
        with timed(profile, "upload"):
            wave_ids = upload_texts(collection, wave, enqueue=args.via_celery)
        with timed(profile, "ingest"):
            if args.via_celery:
                _wait_done(wave_ids, args.timeout)
            else:
                with _sql_timer(profile):
                    _ingest_in_process(wave_ids)
        pipeline_s += time.perf_counter() - started
        cpu_s["pipeline"] += cpu_mark() - mark
        _check_ready(wave_ids)
        ids.extend(wave_ids)
        # The same chunk inputs straight to the server, batched across the wave's documents.
        texts = _chunk_inputs(wave_ids)
        mark = cpu_mark()
        raw_started = time.perf_counter()
        raw_embed(texts, kind="passage")  # batches of EMBEDDING_BATCH_SIZE inside
        raw_s += time.perf_counter() - raw_started
        cpu_s["raw"] += cpu_mark() - mark
        raw_inputs.extend(texts)
        if args.raw_single:
            with override_settings(EMBEDDING_BATCH_SIZE=1):
                mark = cpu_mark()
                single_started = time.perf_counter()
                raw_embed(texts, kind="passage")
                single_s += time.perf_counter() - single_started
                cpu_s["single"] += cpu_mark() - mark
        if args.one_per_call:
            # The same documents indexed again, each on its own (as every task did before small
            # documents were grouped); the profile keeps the main pipeline's figures only.
            saved = dict(profile)
            Document.objects.filter(pk__in=wave_ids).update(
                status=Document.Status.PENDING, progress=0, heartbeat_at=None
            )
            mark = cpu_mark()
            alone_started = time.perf_counter()
            requests_before = profile.get("embed_requests", 0)
            for document_id in dict.fromkeys(wave_ids):
                services.document_ingest(document_id=document_id)
            alone_s += time.perf_counter() - alone_started
            cpu_s["one_per_call"] += cpu_mark() - mark
            alone_requests += profile.get("embed_requests", 0) - requests_before
            profile.clear()
            profile.update(saved)
            _check_ready(wave_ids)
        if len(ids) // wave_size % max(1, 10 // wave_size) == 0 or len(ids) == len(docs):
            single = f", one per request {single_s:.0f} s" if args.raw_single else ""
            alone = f", one document per call {alone_s:.0f} s" if args.one_per_call else ""
            log(
                f"{len(ids)}/{len(docs)} documents: pipeline {pipeline_s:.0f} s, raw {raw_s:.0f} s"
                f"{single}{alone}"
            )
    for restore in undo:
        restore()
    load_after = environment()["load_average_1m"]

    unique_ids = list(dict.fromkeys(ids))
    documents = Document.objects.filter(pk__in=unique_ids)
    chunk_count = Chunk.objects.filter(document_id__in=unique_ids).count()
    token_count = sum(documents.values_list("token_count", flat=True))
    pipeline_cps = chunk_count / pipeline_s
    raw_cps = len(raw_inputs) / raw_s
    ratio = pipeline_cps / raw_cps
    result: dict[str, Any] = {
        "benchmark": "ingest_throughput",
        "command": " ".join(["python", "bench/ingest_throughput.py", *sys.argv[1:]]),
        "mode": "celery" if args.via_celery else "in-process",
        "docs": args.docs,
        "schedule": "pipeline first, then raw" if args.sequential else f"waves of {wave_size} documents",
        "dataset": dataset,
        "documents": len(unique_ids),
        "chunks": chunk_count,
        "characters": sum(len(d.text) for d in docs),
        "estimated_tokens": token_count,
        "chunk_max_tokens": settings.CHUNK_MAX_TOKENS,
        "chunk_overlap_tokens": settings.CHUNK_OVERLAP_TOKENS,
        "pipeline": {
            "seconds": round(pipeline_s, 2),
            "documents_per_s": round(len(unique_ids) / pipeline_s, 3),
            "chunks_per_s": round(pipeline_cps, 3),
        },
        "raw_embeddings": {
            "seconds": round(raw_s, 2),
            "chunks_per_s": round(raw_cps, 3),
            "inputs": len(raw_inputs),
            "input_characters": sum(len(t) for t in raw_inputs),
        },
        "raw_embeddings_one_per_request": (
            {
                "seconds": round(single_s, 2),
                "chunks_per_s": round(len(raw_inputs) / single_s, 3),
                "batched_speedup": round(single_s / raw_s, 3),
            }
            if args.raw_single
            else None
        ),
        "server_cpu_ms_per_chunk": (
            {
                phase: round(1000 * seconds / len(raw_inputs), 1)
                for phase, seconds in cpu_s.items()
                if (phase != "single" or args.raw_single) and (phase != "one_per_call" or args.one_per_call)
            }
            if server_cpu
            else None
        ),
        "pipeline_one_document_per_call": (
            {
                "seconds": round(alone_s, 2),
                "chunks_per_s": round(chunk_count / alone_s, 3),
                "embed_requests": int(alone_requests),
                "ratio": round(chunk_count / alone_s / raw_cps, 3),
            }
            if args.one_per_call
            else None
        ),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "load_average_1m": {"before": load_before, "after": load_after},
        "user": user.username,
        "environment": env,
    }
    if not args.via_celery:
        embed_s = profile.get("embed_http", 0.0)
        other = profile["ingest"] - sum(profile.get(k, 0.0) for k in ("parse", "chunk", "embed_http", "sql"))
        breakdown = {
            "upload_s (hash, store file, document row)": profile["upload"],
            "parse_s": profile.get("parse", 0.0),
            "chunk_s": profile.get("chunk", 0.0),
            "embed_http_s": embed_s,
            "sql_s (claim, progress, chunk insert, transactions)": profile.get("sql", 0.0),
            "other_s (task call, file read, Python)": other,
        }
        result["profile"] = {k: round(v, 3) for k, v in breakdown.items()}
        result["profile_share_of_pipeline"] = {
            k.split(" ")[0].removesuffix("_s"): round(v / pipeline_s, 4) for k, v in breakdown.items()
        }
        result["sql_statements"] = int(profile.get("sql_statements", 0))
        result["embed_requests"] = int(profile.get("embed_requests", 0))
        result["embed_texts_per_request"] = round(
            profile.get("embed_texts", 0) / max(1, profile.get("embed_requests", 0)), 2
        )
        # Noise-free view: the same run's time inside provider.embed against the whole pipeline.
        result["embed_share_of_pipeline"] = round(embed_s / pipeline_s, 4)
        result["overhead_ms_per_document"] = round(1000 * (pipeline_s - embed_s) / len(unique_ids), 2)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
