"""`manage.py train_router`: fit the router's classifier on COVID-QA and write routing/data/classifier.json.

Deterministic (a hash split and Newton's method from zero), so a second run writes the same file.
Prints one JSON object with the held-out metrics; see routing/training.py for the data and label.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing import training


class Command(BaseCommand):
    help = "Train the router's small classifier on the shared COVID-QA data; print metrics JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--datasets",
            default=str(Path(settings.BASE_DIR).parent / "shared" / "datasets"),
            help="The shared datasets folder (default: ../shared/datasets).",
        )
        parser.add_argument("--out", default=str(training.CLASSIFIER_PATH), help="The classifier file.")
        parser.add_argument("--dry-run", action="store_true", help="Fit and report, but write nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        root = Path(options["datasets"])
        if not (root / "covid-qa" / "200423_covidQA.json").is_file():
            raise CommandError(f"{root} does not hold covid-qa/200423_covidQA.json.")
        model = training.train(root)
        if not options["dry_run"]:
            Path(options["out"]).write_text(json.dumps(model, indent=2) + "\n", encoding="utf-8")
        self.stdout.write(
            json.dumps({"out": None if options["dry_run"] else options["out"], **model["metrics"]})
        )
