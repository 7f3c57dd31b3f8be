"""`manage.py export_finetune --out FILE`: good strong-model answers as fine-tuning JSONL.

Writes FILE (training) and FILE's name with `.validation` before its suffix (data.jsonl ->
data.validation.jsonl), split deterministically by answer id, and prints one summary line. With
`--start` and an OpenAI key, uploads both and starts a fine-tuning job that Celery follows; its
model is registered for routing only after an eval run shows it is not worse than the current
one. See routing/distill.py for which answers qualify.
"""

from __future__ import annotations

from datetime import datetime, time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from assistant import services as assistant_services
from assistant.models import Assistant
from evals import services as evals_services
from evals.models import Suite
from routing import distill, services


def validation_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.validation{out.suffix or '.jsonl'}")


def _date(value: str) -> datetime:
    try:
        day = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"--since {value!r} is not a date like 2025-01-31.") from exc
    if day.tzinfo is None:
        day = timezone.make_aware(datetime.combine(day.date(), time()) if len(value) <= 10 else day)
    return day


class Command(BaseCommand):
    help = "Export rated-up or approved grounded strong-model answers as OpenAI fine-tuning JSONL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, help="The training JSONL file to write.")
        parser.add_argument("--validation-fraction", type=float, default=0.1)
        parser.add_argument("--since", help="Only answers made on or after this date (YYYY-MM-DD).")
        parser.add_argument(
            "--min-rating", type=int, default=1, help="Net rating (thumbs up minus down) an answer needs."
        )
        parser.add_argument(
            "--model", help="Answers made by this model (default: those the router sent to the strong model)."
        )
        parser.add_argument("--start", action="store_true", help="Upload and start a fine-tuning job.")
        parser.add_argument(
            "--assistant", help="Register the result on this assistant (default: the default)."
        )
        parser.add_argument(
            "--suite", default=evals_services.DEFAULT_SUITE, help="Eval suite that gates the registration."
        )
        parser.add_argument("--base-model", default=services.DEFAULT_BASE_MODEL)
        parser.add_argument(
            "--max-drop", type=float, default=0.0, help="Allowed pass-rate drop against the current model."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        fraction = options["validation_fraction"]
        if not 0 <= fraction < 1:
            raise CommandError("--validation-fraction must be at least 0 and below 1.")
        if options["start"] and not services.finetune_available():
            raise CommandError(
                "Fine-tuning needs an OpenAI key: set OPENAI_API_KEY (and leave OPENAI_BASE_URL unset). "
                "Chat is served by the local model, which cannot be fine-tuned. The export itself works "
                "without --start."
            )
        export = distill.finetune_export(
            model=options["model"],
            since=_date(options["since"]) if options["since"] else None,
            min_rating=options["min_rating"],
            validation_fraction=fraction,
        )
        out = Path(options["out"])
        held_out = validation_path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(e.line() + "\n" for e in export.train), encoding="utf-8")
        held_out.write_text("".join(e.line() + "\n" for e in export.validation), encoding="utf-8")
        self.stdout.write(
            f"Exported {len(export.train) + len(export.validation)} examples "
            f"({len(export.train)} train -> {out}, {len(export.validation)} validation -> {held_out}) "
            f"from {export.considered} answers ({export.rated} rated up, "
            f"{export.approved} staff-approved or corrected, "
            f"{export.skipped_context} skipped: context no longer available)."
        )
        if options["start"]:
            self._start(export, options)

    def _start(self, export: distill.Export, options: dict[str, Any]) -> None:
        if not export.train:
            raise CommandError("No training examples: nothing to fine-tune on.")
        if options["assistant"]:
            assistant = Assistant.objects.filter(name=options["assistant"]).first()
            if assistant is None:
                raise CommandError(f"No assistant named {options['assistant']!r}.")
        else:
            assistant = assistant_services.assistant_default()
        suite = Suite.objects.filter(name=options["suite"]).first()
        if suite is None:
            raise CommandError(f"No eval suite named {options['suite']!r} to gate the registration.")
        job = services.finetune_job_start(
            assistant=assistant,
            train=export.train,
            validation=export.validation,
            suite=suite,
            base_model=options["base_model"],
            max_drop=options["max_drop"],
        )
        self.stdout.write(
            f"Started fine-tuning job {job.provider_job_id} on {job.base_model}; Celery follows it, and "
            f"an eval run of “{suite.name}” decides whether it becomes {assistant.name}'s cheap model."
        )
