"""An upload indexed by a real Celery worker with the real local embedding model, then searched."""

from __future__ import annotations

import time

import pytest
from django.core.files.base import ContentFile

from knowledge.models import Document
from knowledge.selectors import search
from knowledge.services import document_upload
from knowledge.tasks import ingest_document
from tests import factories

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HANDBOOK = """# Travel policy

## Booking

Book flights through the travel desk at least two weeks before departure. Economy class is the
default for flights under six hours.

## Expenses

Submit expense reports by the fifth day of the following month, with receipts attached.
"""


def wait_for(document: Document, timeout: float = 90) -> Document:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document.refresh_from_db()
        if document.is_terminal:
            return document
        time.sleep(0.3)
    raise AssertionError(f"document still {document.status} after {timeout} s")


def test_upload_is_indexed_by_the_worker_and_found_by_hybrid_search(celery_worker_process: object) -> None:
    reader = factories.user()
    collection = factories.collection(readers=[reader])
    upload = ContentFile(HANDBOOK.encode())
    outcome = document_upload(collection=collection, file=upload, filename="travel.md")
    document = wait_for(outcome.document)
    assert document.status == Document.Status.READY, document.error
    assert document.chunk_count >= 1 and document.kind == "markdown"

    hits = search(reader, "When are expense reports due?", k=3)
    assert hits and "fifth day" in hits[0].chunk.text
    assert hits[0].heading_path == ["Travel policy", "Expenses"]
    assert hits[0].vector_score is not None

    outsider = factories.user()
    assert search(outsider, "When are expense reports due?", k=3) == []


def test_a_corrupt_upload_fails_cleanly_in_the_worker(celery_worker_process: object) -> None:
    collection = factories.collection()
    broken = ContentFile(b"%PDF-1.7\n garbage that is not a pdf")
    outcome = document_upload(collection=collection, file=broken, filename="broken.pdf")
    document = wait_for(outcome.document)
    assert document.status == Document.Status.FAILED
    assert "PDF" in document.error and "Traceback" not in document.error


def test_small_uploads_are_indexed_together_by_the_worker(celery_worker_process: object) -> None:
    reader = factories.user()
    collection = factories.collection(readers=[reader])
    notes = [
        "The canteen serves lunch from noon to two.",
        "Parking permits are renewed every January.",
        "The library lends laptops for a week.",
        "Fire drills happen every quarter.",
        "The gym opens at six in the morning.",
        "Visitors sign in at the front desk.",
    ]
    ids = [
        document_upload(
            collection=collection, file=ContentFile(text.encode()), filename=f"note-{n}.txt", enqueue=False
        ).document.pk
        for n, text in enumerate(notes, start=1)
    ]
    broken = document_upload(
        collection=collection, file=ContentFile(b"%PDF-1.7\n not a pdf"), filename="b.pdf", enqueue=False
    ).document.pk
    ids.insert(3, broken)

    # Each document's own message, as uploads send them; the first task takes the others along.
    results = [ingest_document.delay(pk) for pk in ids]
    summaries = [r.get(timeout=120) for r in results]

    statuses = dict(Document.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [statuses[pk] for pk in ids if pk != broken] == ["ready"] * 6
    failed = Document.objects.get(pk=broken)
    assert failed.status == Document.Status.FAILED and "PDF" in failed.error
    assert "skipped" in summaries  # some documents were indexed by another document's task
    assert sum(int(s.split(" ready")[0]) for s in summaries if " ready" in s) == 6
    # Each document got its own text's vector, not a neighbour's from the shared batch.
    questions = {"When does the gym open?": "gym", "Where do visitors sign in?": "front desk"}
    for question, expected in questions.items():
        hits = search(reader, question, k=3)
        assert hits and expected in hits[0].chunk.text and hits[0].vector_rank == 1

    # A second delivery of every message changes nothing.
    again = [ingest_document.delay(pk).get(timeout=60) for pk in ids]
    assert again == ["skipped"] * len(ids)
    assert set(Document.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}
