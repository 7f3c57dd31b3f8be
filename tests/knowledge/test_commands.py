"""`manage.py ingest` and `manage.py search`."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from knowledge.models import Chunk, Collection, Document
from tests import factories
from tests.knowledge.samples import CORRUPT_PDF, HANDBOOK, text_pdf

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        call_command(*args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "policies" / "travel").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "handbook.md").write_text(HANDBOOK)
    (root / "policies" / "expenses.txt").write_text("Receipts are due within thirty days.")
    (root / "policies" / "travel" / "trains.pdf").write_bytes(text_pdf("Book trains two weeks ahead."))
    (root / ".hidden.txt").write_text("not for ingestion")
    (root / ".git" / "config").write_text("[core]")
    return root


def lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_ingest_folder_sync(folder: Path) -> None:
    output, error = run("ingest", str(folder), "--sync")

    file_lines = lines(output)[:-1]
    assert error is None, output
    assert len(file_lines) == 3
    assert all(line.startswith("ok      ") for line in file_lines), output
    assert any(str(folder / "policies" / "travel" / "trains.pdf") in line for line in file_lines)
    assert "chunk" in file_lines[0]
    assert lines(output)[-1] == "3 of 3 files done, 0 failed."
    collection = Collection.objects.get(name="Default")
    assert not collection.is_public
    assert sorted(collection.documents.values_list("filename", flat=True)) == [
        "expenses.txt",
        "handbook.md",
        "trains.pdf",
    ]
    assert set(Document.objects.values_list("status", flat=True)) == {Document.Status.READY}


def test_ingest_again_reports_duplicates(folder: Path) -> None:
    run("ingest", str(folder), "--sync", "--collection", "Handbooks")
    chunks = Chunk.objects.count()

    output, error = run("ingest", str(folder / "handbook.md"), "--sync", "--collection", "Handbooks")

    assert error is None
    assert lines(output)[0].startswith("dup     ")
    assert "already present as" in lines(output)[0]
    assert Chunk.objects.count() == chunks


def test_ingest_with_a_corrupt_file_fails_but_ingests_the_others(folder: Path) -> None:
    (folder / "policies" / "broken.pdf").write_bytes(CORRUPT_PDF)

    output, error = run("ingest", str(folder), "--sync")

    assert error is not None and "1 file failed" in str(error)
    failed = [line for line in lines(output) if line.startswith("failed")]
    assert len(failed) == 1
    assert "broken.pdf" in failed[0] and "damaged" in failed[0]
    assert Document.objects.filter(status=Document.Status.READY).count() == 3


def test_ingest_refuses_oversized_files_without_reading_them(
    folder: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.UPLOAD_MAX_BYTES = 100
    opened: list[Path] = []
    real_open = Path.open

    def spy(self: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(self)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy)

    output, error = run(
        "ingest", str(folder / "handbook.md"), str(folder / "policies" / "expenses.txt"), "--sync"
    )

    assert error is not None
    assert lines(output)[0].startswith("failed  ") and "limit" in lines(output)[0]
    assert lines(output)[1].startswith("ok      ")
    assert folder / "handbook.md" not in opened
    assert list(Document.objects.values_list("filename", flat=True)) == ["expenses.txt"]


def test_ingest_missing_path_and_same_name_twice(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("First notes.")
    (tmp_path / "b" / "notes.txt").write_text("Other notes.")

    output, error = run("ingest", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "nope"), "--sync")

    assert error is not None and "2 files failed" in str(error)
    assert "same file name as" in output
    assert "no such file or folder" in output
    assert Document.objects.get().version == 1


def test_ingest_without_sync_queues_for_the_worker(
    folder: Path, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:  # eager Celery runs the task here
        output, error = run("ingest", str(folder / "handbook.md"))

    assert error is None
    assert lines(output)[0].startswith("queued  ")
    assert len(callbacks) == 1
    assert Document.objects.get().status == Document.Status.READY


def test_search_json(admin_user: Any) -> None:
    collection = factories.collection(name="Handbooks")
    factories.document(collection=collection, text=HANDBOOK, filename="handbook.md")
    factories.document(collection=collection, text="Fire drills happen every quarter.", filename="drills.txt")

    output, error = run("search", "annual", "leave", "days", "--json", "-k", "3")

    results = json.loads(output)
    assert error is None
    assert 1 <= len(results) <= 3
    required = {"chunk_id", "document_id", "filename", "title", "score", "vector_score", "keyword_score"}
    assert all(required | {"page", "heading", "text"} <= set(result) for result in results)
    top = results[0]
    assert top["filename"] == "handbook.md"
    assert top["heading"] == "Staff handbook › Leave"
    assert "annual leave" in top["text"]
    assert top["score"] > 0 and top["vector_score"] is not None and top["keyword_score"] is not None


def test_search_table_and_user_permissions(member: Any) -> None:
    collection = factories.collection(name="Private")
    factories.document(collection=collection, text=HANDBOOK, filename="handbook.md")

    as_operator, _ = run("search", "annual leave")
    as_member, _ = run("search", "annual leave", "--user", "member", "--json")
    _, unknown_user = run("search", "annual leave", "--user", "nobody")
    _, unknown_collection = run("search", "annual leave", "--collection", "Nope")

    assert " 1. " in as_operator and "Staff handbook" in as_operator and "plan:" in as_operator
    assert json.loads(as_member) == []
    assert unknown_user is not None and "No user named 'nobody'" in str(unknown_user)
    assert unknown_collection is not None and "No collection named 'Nope'" in str(unknown_collection)
