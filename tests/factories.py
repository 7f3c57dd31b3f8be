"""Test data in one place."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from django.test import TestCase

from knowledge.models import Collection, Document
from knowledge.services import collection_create, document_ingest, document_upload

_counter = itertools.count(1)


def committed() -> AbstractContextManager[list[Callable[[], Any]]]:
    """Run the `transaction.on_commit` work queued inside the block when it ends, as a real commit
    would (a test runs inside one transaction that never commits): e.g. an answer's bookkeeping."""
    return TestCase.captureOnCommitCallbacks(execute=True)


def user(*, username: str | None = None, staff: bool = False, superuser: bool = False, **extra: Any) -> User:
    name = username or f"user{next(_counter)}"
    return User.objects.create_user(
        username=name, password="pw-" + name, is_staff=staff or superuser, is_superuser=superuser, **extra
    )


def group(name: str | None = None) -> Group:
    return Group.objects.create(name=name or f"group{next(_counter)}")


def collection(
    *, name: str | None = None, public: bool = False, readers: list[User] | None = None
) -> Collection:
    created = collection_create(name=name or f"collection{next(_counter)}", is_public=public)
    if readers:
        created.reader_users.add(*readers)
    return created


def document(
    *, collection: Collection, text: str, filename: str | None = None, ingest: bool = True
) -> Document:
    """Upload `text` as a Markdown/text file and, by default, index it right here (no worker)."""
    name = filename or f"doc{next(_counter)}.md"
    outcome = document_upload(collection=collection, file=ContentFile(text.encode()), filename=name)
    if ingest:
        document_ingest(document_id=outcome.document.pk)
    outcome.document.refresh_from_db()
    return outcome.document
