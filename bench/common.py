"""Helpers shared by the benchmark scripts: Django setup, timing, percentiles, datasets, output.

Every script prints exactly one JSON object to stdout and writes progress to stderr, so
`python bench/NAME.py > result.json` keeps a clean record of a run.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# Shared third-party data, read in place and never copied into the repository.
DATASETS = REPO_ROOT.parent / "shared" / "datasets"
COVID_QA = DATASETS / "covid-qa" / "200423_covidQA.json"
CDC_FAQ = DATASETS / "covid-qa" / "faq_covidbert.csv"
CDC_FAQ_PAIRS = DATASETS / "covid-qa" / "eval_question_similarity_en.csv"
SQUAD_DEV = DATASETS / "squad" / "dev-v2.0-half.json"
DRCD_DEV = DATASETS / "drcd" / "DRCD_dev.json"

CITATIONS = {
    "covid-qa": "COVID-QA (deepset-ai/COVID-QA, 200423_covidQA.json), Apache-2.0",
    "squad": "SQuAD 2.0 dev, CS224N half (chrischute/squad, data/dev-v2.0.json), CC BY-SA 4.0",
    "drcd": "DRCD dev, Traditional Chinese (DRCKnowledgeTeam/DRCD, DRCD_dev.json), CC BY-SA 3.0",
}

BENCH_USER = "bench-admin"
# ingest_throughput.py rebuilds this collection; retrieval_quality.py reuses it when complete.
COVID_COLLECTION = "bench-ingest-covid-qa"

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from knowledge.models import Collection


def setup_django() -> None:
    """Import path and settings for a script run as `python bench/NAME.py` from the repo root."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextmanager
def timed(into: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall time of the block, in seconds, to `into[key]`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        into[key] = into.get(key, 0.0) + time.perf_counter() - started


def wrap_timed(owner: Any, name: str, into: dict[str, float], key: str | None = None) -> Callable[[], None]:
    """Replace `owner.name` with a wrapper that accumulates its wall time; returns an undo function."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with timed(into, key or name):
            return original(*args, **kwargs)

    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, original)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "max_ms": round(max(ms), 2) if ms else math.nan,
        "mean_ms": round(sum(ms) / len(ms), 2) if ms else math.nan,
    }


def environment() -> dict[str, Any]:
    """What the figures depend on: code version, machine, servers, and how busy the machine was."""
    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
        cursor.execute("SHOW shared_buffers")
        shared_buffers = cursor.fetchone()[0]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=REPO_ROOT, capture_output=True, text=True, check=False,
            ).stdout.strip()
        )  # fmt: skip
    except OSError:
        commit, dirty = "", False
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": commit + ("+dirty" if dirty else ""),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "postgres": pg_version,
        "pgvector": row[0] if row else None,
        "shared_buffers": shared_buffers,
        "embedding_model": settings.EMBEDDING_MODEL,
        "embeddings_base_url": settings.EMBEDDINGS_BASE_URL,
        "embedding_batch_size": settings.EMBEDDING_BATCH_SIZE,
    }


def emit(result: dict[str, Any], out: str | None = None) -> None:
    """Print the one JSON result to stdout, and also write it to `out` when given."""
    text = json.dumps(result, indent=2, default=str)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        log(f"result written to {path}")
    print(text, flush=True)


@contextmanager
def throwaway_database(prefix: str) -> Iterator[None]:
    """A new, migrated database on the configured PostgreSQL server for the block, dropped after."""
    from django.conf import settings
    from django.db import connection

    test = settings.DATABASES["default"].setdefault("TEST", {})
    test["NAME"] = f"{prefix}_{os.getpid()}"
    original = settings.DATABASES["default"]["NAME"]
    log(f"creating the throw-away database {test['NAME']}")
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        yield
    finally:
        connection.creation.destroy_test_db(original, verbosity=0)


# --- users, collections, documents ------------------------------------------------------------


def bench_superuser() -> User:
    from django.contrib.auth.models import User

    user, _ = User.objects.get_or_create(
        username=BENCH_USER, defaults={"is_superuser": True, "is_staff": True}
    )
    if not user.is_superuser:
        user.is_superuser = True
        user.save(update_fields=["is_superuser"])
    return user


def collection_reset(name: str) -> Collection:
    """An empty collection called `name`: its documents and their stored files are deleted first."""
    from knowledge import services
    from knowledge.models import Collection

    existing = Collection.objects.filter(name=name).first()
    if existing is not None:
        for document in existing.documents.all():
            services.document_delete(document=document)
        existing.delete()
    return services.collection_create(name=name, description="Benchmark data; safe to delete.")


@dataclass(frozen=True)
class TextDoc:
    filename: str
    title: str  # "": the upload derives it
    text: str


def upload_texts(collection: Collection, docs: Iterable[TextDoc], *, enqueue: bool) -> list[int]:
    """Upload each text as a UTF-8 document (parsed by its filename's extension); returns the
    document ids (duplicates included)."""
    from django.core.files.base import ContentFile

    from knowledge import services

    ids: list[int] = []
    for doc in docs:
        upload = ContentFile(doc.text.encode("utf-8"), name=doc.filename)
        outcome = services.document_upload(
            collection=collection, file=upload, filename=doc.filename, title=doc.title, enqueue=enqueue
        )
        ids.append(outcome.document.pk)
    return ids


def ingest_pending(document_ids: Sequence[int], *, label: str = "ingest", verbose: bool = True) -> None:
    """Run the real ingest service in-process for the documents not yet ready."""
    from knowledge import services
    from knowledge.models import Document

    # A run interrupted mid-document leaves it "processing"; these are bench rows, so take them back.
    Document.objects.filter(pk__in=document_ids, status=Document.Status.PROCESSING).update(
        status=Document.Status.PENDING, heartbeat_at=None
    )
    pending = list(
        Document.objects.filter(pk__in=document_ids)
        .exclude(status=Document.Status.READY)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    started = time.perf_counter()
    for done, document_id in enumerate(pending, start=1):
        result = services.document_ingest(document_id=document_id)
        if result is None or result.status != Document.Status.READY:
            document = Document.objects.get(pk=document_id)
            raise RuntimeError(f"{label}: document {document_id} ended {document.status}: {document.error}")
        if verbose and (done % 10 == 0 or done == len(pending)):
            log(f"{label}: {done}/{len(pending)} documents in {time.perf_counter() - started:.0f} s")


# --- datasets ---------------------------------------------------------------------------------


def load_json(path: Path) -> Any:
    if not path.exists():
        raise SystemExit(f"dataset missing: {path} (expected under {DATASETS})")
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def covid_title(context: str) -> str:
    """The article's first line, which in COVID-QA is the paper's title."""
    first = context.strip().split("\n", 1)[0].strip()
    return first[:300] or "Untitled"


def covid_articles(limit: int | None = None) -> list[dict[str, Any]]:
    """COVID-QA articles as {document_id, context, qas}; each article is one paragraph."""
    data = load_json(COVID_QA)["data"]
    articles = []
    for article in data:
        paragraph = article["paragraphs"][0]
        articles.append(
            {
                "document_id": paragraph["document_id"],
                "context": paragraph["context"],
                "qas": paragraph["qas"],
            }
        )
    return articles[:limit] if limit else articles


def covid_docs(articles: Sequence[dict[str, Any]]) -> list[TextDoc]:
    return [
        TextDoc(f"covid-qa-{a['document_id']}.txt", covid_title(a["context"]), a["context"]) for a in articles
    ]


def cdc_faq() -> dict[str, str]:
    """The CDC FAQ of COVID-QA: each question once, with its first answer, in the file's order."""
    import csv

    answers: dict[str, str] = {}
    with CDC_FAQ.open(newline="") as handle:
        for row in csv.DictReader(handle):
            question, answer = row["question"].strip(), row["answer"].strip()
            if question and answer:
                answers.setdefault(question, answer)
    return answers


def cdc_faq_pairs(answers: dict[str, str]) -> list[tuple[str, str, bool]]:
    """(FAQ question, another question, marked similar) from COVID-QA's question pairs, in the
    file's order, for the questions in `answers` (`cdc_faq()`)."""
    import csv

    pairs = []
    with CDC_FAQ_PAIRS.open(newline="") as handle:
        for row in csv.DictReader(handle):
            question, other = row["question_1"].strip(), row["question_2"].strip()
            if question in answers and other and other != question:
                pairs.append((question, other, row["similar"].strip() == "1"))
    return pairs


def faq_doc(number: int, question: str, answer: str) -> TextDoc:
    """One FAQ entry as a Markdown document: its question as the heading over its answer. The
    title is left to the upload, as a user's would be (from the file name, then the heading)."""
    return TextDoc(f"faq-{number:03}.md", "", f"# {question}\n\n{answer}\n")


# --- query vectors ----------------------------------------------------------------------------

VECTOR_CACHE = REPO_ROOT / ".data" / "bench-cache"


def cached_query_vectors(name: str, texts: Sequence[str], *, batch: int = 64) -> list[list[float]]:
    """Query-mode embeddings of `texts`, in order, computed once and kept in
    `.data/bench-cache/{name}-{key}.jsonl` (the key names the model and the server, so another
    embedding model starts a new file). Later runs embed only texts not yet in the file."""
    import hashlib

    from django.conf import settings

    from gateway import provider

    VECTOR_CACHE.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{settings.EMBEDDING_MODEL}|{settings.EMBEDDINGS_BASE_URL}".encode()).hexdigest()
    path = VECTOR_CACHE / f"{name}-{key[:12]}.jsonl"
    vectors: dict[str, list[float]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            vectors[row["t"]] = row["v"]
    missing = sorted({t for t in texts if t not in vectors})
    log(f"{name}: {len(texts)} queries, {len(missing)} to embed ({path.name})")
    with path.open("a", encoding="utf-8") as out:
        for start in range(0, len(missing), batch):
            chunk = missing[start : start + batch]
            for text, vector in zip(chunk, provider.embed(chunk, kind="query").vectors, strict=True):
                vectors[text] = vector
                out.write(
                    json.dumps({"t": text, "v": [round(x, 6) for x in vector]}, ensure_ascii=False) + "\n"
                )
            out.flush()
    return [vectors[t] for t in texts]
