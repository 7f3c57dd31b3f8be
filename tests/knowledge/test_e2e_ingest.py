"""An upload indexed by a real Celery worker with the real local embedding model, then searched."""

from __future__ import annotations

import time

import pytest
from django.core.files.base import ContentFile

from knowledge.models import Document
from knowledge.selectors import search
from knowledge.services import document_upload
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
