"""The Django admin for collections, documents and chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from knowledge.models import Chunk, Collection, Document
from tests import factories
from tests.knowledge.samples import HANDBOOK

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client: Client, admin_user: Any) -> Client:
    client.force_login(admin_user)
    return client


@pytest.fixture
def document(member: Any) -> Document:
    collection = factories.collection(name="Handbooks", readers=[member])
    return factories.document(collection=collection, text=HANDBOOK, filename="handbook.md")


def test_admin_pages_render(admin_client: Client, document: Document) -> None:
    chunk = Chunk.objects.filter(document=document).first()
    assert chunk is not None
    pages = [
        reverse("admin:knowledge_collection_changelist"),
        reverse("admin:knowledge_collection_change", args=[document.collection_id]),
        reverse("admin:knowledge_document_changelist"),
        reverse("admin:knowledge_document_changelist") + "?status__exact=ready",
        reverse("admin:knowledge_document_change", args=[document.pk]),
        reverse("admin:knowledge_chunk_changelist") + "?q=annual",
        reverse("admin:knowledge_chunk_change", args=[chunk.pk]),
    ]

    responses = {url: admin_client.get(url) for url in pages}

    assert {url: r.status_code for url, r in responses.items()} == dict.fromkeys(pages, 200)
    collections = responses[pages[0]].content.decode()
    assert '<td class="field-document_count">1</td>' in collections
    assert "Staff handbook" in responses[pages[2]].content.decode()
    chunk_page = responses[pages[-1]].content.decode()
    assert "annual leave" in chunk_page
    assert "embedding" not in chunk_page.lower()
    assert admin_client.get(reverse("admin:knowledge_document_add")).status_code == 403


def test_reindex_action(
    admin_client: Client, document: Document, django_capture_on_commit_callbacks: Any
) -> None:
    first_indexed = document.indexed_at

    with django_capture_on_commit_callbacks(execute=True) as callbacks:  # eager Celery re-indexes here
        response = admin_client.post(
            reverse("admin:knowledge_document_changelist"),
            {"action": "reindex", "_selected_action": [document.pk]},
            follow=True,
        )

    document.refresh_from_db()
    assert response.status_code == 200
    assert "Queued 1 document for re-indexing." in response.content.decode()
    assert len(callbacks) == 1
    assert document.status == Document.Status.READY
    assert (
        first_indexed is not None and document.indexed_at is not None and document.indexed_at > first_indexed
    )


def test_deleting_in_the_admin_removes_files(
    admin_client: Client, document: Document, django_capture_on_commit_callbacks: Any
) -> None:
    other = factories.document(collection=document.collection, text="Other text.", filename="other.txt")
    paths = [Path(document.file.path), Path(other.file.path)]

    confirm = admin_client.get(reverse("admin:knowledge_document_delete", args=[document.pk]))
    assert confirm.status_code == 200
    assert f"Staff handbook (v1) — {document.chunk_count} chunks" in confirm.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:knowledge_document_delete", args=[document.pk]), {"post": "yes"})
        admin_client.post(
            reverse("admin:knowledge_document_changelist"),
            {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"},
        )

    assert not Document.objects.exists()
    assert not Chunk.objects.exists()
    assert not any(path.exists() for path in paths)


def test_deleting_a_collection_removes_its_files(
    admin_client: Client, document: Document, django_capture_on_commit_callbacks: Any
) -> None:
    path = Path(document.file.path)

    confirm = admin_client.get(reverse("admin:knowledge_collection_delete", args=[document.collection_id]))
    assert confirm.status_code == 200 and "Handbooks: 1 document" in confirm.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:knowledge_collection_delete", args=[document.collection_id]), {"post": "yes"}
        )

    assert not Collection.objects.exists()
    assert not Document.objects.exists()
    assert not path.exists()
