from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.template.defaultfilters import filesizeformat
from kombu.exceptions import OperationalError

from knowledge import services
from knowledge.models import Collection, Document


def _files_under(path: Path) -> Iterator[Path]:
    """`path` itself, or every file below it in name order, leaving out hidden files and folders."""
    if not path.is_dir():
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


class Command(BaseCommand):
    help = (
        "Upload files, or every file under folders, into a collection. The documents are queued for "
        "the Celery worker, or indexed right here with --sync."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, help="Files or folders (folders are walked).")
        parser.add_argument(
            "--collection", default="Default", help="Collection name; created (not public) if missing."
        )
        parser.add_argument(
            "--sync", action="store_true", help="Index each file in this process instead of queueing it."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        collection = services.collection_create(name=options["collection"])
        sync: bool = options["sync"]
        limit = settings.UPLOAD_MAX_BYTES
        seen: dict[str, Path] = {}
        total = failed = 0

        for root in options["paths"]:
            if not root.exists():
                total += 1
                failed += 1
                self._line("failed", root, "no such file or folder")
                continue
            for path in _files_under(root):
                total += 1
                # Documents are keyed by file name within a collection: a second file of the same
                # name in one run would silently replace the first as its "new version".
                if path.name in seen:
                    failed += 1
                    self._line("failed", path, f"same file name as {seen[path.name]}; ingest it separately")
                    continue
                seen[path.name] = path
                try:
                    size = path.stat().st_size
                except OSError as exc:
                    failed += 1
                    self._line("failed", path, exc.strerror or str(exc))
                    continue
                if size > limit:  # decided from the directory entry, without reading the file
                    failed += 1
                    self._line(
                        "failed", path, f"{filesizeformat(size)} is over the {filesizeformat(limit)} limit"
                    )
                    continue
                if not self._ingest(collection, path, sync=sync):
                    failed += 1

        self.stdout.write(
            f"{total - failed} of {total} file{'s' if total != 1 else ''} done, {failed} failed."
        )
        if failed:
            raise CommandError(f"{failed} file{'s' if failed != 1 else ''} failed; see above.")

    def _ingest(self, collection: Collection, path: Path, *, sync: bool) -> bool:
        """Upload one file (and with `sync`, index it); print its line; False when it failed."""
        retry = ""
        try:
            # With --sync nothing is queued: this process indexes the document itself.
            with path.open("rb") as handle:
                outcome = services.document_upload(
                    collection=collection,
                    file=File(handle, name=path.name),
                    filename=path.name,
                    enqueue=not sync,
                )
            if sync and outcome.action != "duplicate":
                try:
                    services.document_ingest(document_id=outcome.document.pk)
                except services.IngestRetry as exc:
                    retry = str(exc)
        except services.UploadRejected as exc:
            self._line("failed", path, str(exc))
            return False
        except OSError as exc:
            self._line("failed", path, exc.strerror or str(exc))
            return False
        except OperationalError as exc:
            # Raised by the enqueue after the commit: the file is stored, only the message to the
            # worker was lost, and the beat sweep re-queues documents left pending.
            if not sync:
                self._line(
                    "queued", path, f"stored, but the queue is unreachable ({exc}); the sweep will retry"
                )
                return True

        document = outcome.document
        if outcome.action == "duplicate":
            self._line("dup", path, f"(already present as “{document.title}” v{document.version})")
            return True
        version = f", version {document.version}" if outcome.action == "new_version" else ""
        if not sync:
            self._line("queued", path, f"(for the worker{version})")
            return True
        if retry:
            self._line("failed", path, f"{retry}; left queued for the worker to retry")
            return False
        document.refresh_from_db()
        if document.status == Document.Status.READY:
            chunks = f"{document.chunk_count} chunk{'s' if document.chunk_count != 1 else ''}"
            self._line("ok", path, f"({chunks}{version})")
            return True
        if document.status == Document.Status.FAILED:
            self._line("failed", path, document.error or "indexing failed")
            return False
        self._line("queued", path, f"(a worker is indexing it{version})")
        return True

    def _line(self, label: str, path: Path, detail: str) -> None:
        self.stdout.write(f"{label:<8}{path}  {detail}")
