from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evals import datasets, services
from evals.models import Case

FILE_FORMATS = ("jsonl", "csv", "squad")
ANSWER_FORMATS = ("reviewed", "thumbs-down")


class Command(BaseCommand):
    help = (
        "Import evaluation cases into a suite (created if new) from a JSONL, CSV or SQuAD file, or from "
        "answers people flagged and rated (reviewed) or rated not helpful (thumbs-down). A bad file is "
        "rejected with its line and reason, and nothing is imported. Formats: evals/README.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", nargs="?", help="The dataset file (not used by reviewed/thumbs-down).")
        parser.add_argument("--suite", required=True, help="The suite's name.")
        parser.add_argument(
            "--format", choices=FILE_FORMATS + ANSWER_FORMATS, help="Default: from the extension."
        )
        parser.add_argument(
            "--limit", type=int, help="SQuAD: sample this many questions (half unanswerable)."
        )
        parser.add_argument("--seed", type=int, default=0, help="SQuAD: the sampling seed (default 0).")
        parser.add_argument(
            "--sync", action="store_true", help="SQuAD: index the paragraphs here instead of queueing them."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        kind = options["format"] or _format_of(options["file"])
        suite = options["suite"]
        if kind in ANSWER_FORMATS:
            importer = services.cases_from_reviewed if kind == "reviewed" else services.cases_from_thumbs_down
            outcome = importer(suite_name=suite)
            self.stdout.write(f"{suite}: {outcome.created} case(s) added, {outcome.skipped} already there.")
            return
        if not options["file"]:
            raise CommandError(f"--format {kind} needs a FILE.")
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        path = Path(options["file"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from exc
        try:
            if kind == "squad":
                dataset = datasets.parse_squad(data, limit=options["limit"], seed=options["seed"])
            else:
                dataset = datasets.PARSERS[kind](data)
                if options["limit"]:
                    dataset.cases = dataset.cases[: options["limit"]]
        except datasets.DatasetError as exc:
            raise CommandError(f"{path.name}: {exc}. Nothing was imported.") from exc
        outcome = services.cases_import(
            suite_name=suite, dataset=dataset, source=Case.Source(kind), enqueue_indexing=not options["sync"]
        )
        self.stdout.write(f"{suite}: {outcome.created} case(s) added, {outcome.skipped} already there.")
        if outcome.document_ids:
            self.stdout.write(
                f"{len(outcome.document_ids)} document(s) for the suite ({outcome.documents_new} new) in "
                f"“{outcome.suite.collection}”."
            )
            if options["sync"]:
                failed = services.documents_index(document_ids=outcome.document_ids)
                if failed:
                    raise CommandError(f"{len(failed)} document(s) failed to index: ids {failed}.")
                self.stdout.write("Indexed.")
            else:
                self.stdout.write("Indexing is queued for the Celery worker.")


def _format_of(file: str | None) -> str:
    if not file:
        raise CommandError("Give a FILE, or --format reviewed|thumbs-down.")
    suffix = Path(file).suffix.lower().lstrip(".")
    if suffix in {"jsonl", "csv"}:
        return suffix
    if suffix == "json":
        return "squad"
    raise CommandError(f"Cannot tell the format of {file}: pass --format jsonl|csv|squad.")
