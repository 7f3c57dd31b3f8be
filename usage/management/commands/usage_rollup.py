from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from usage import services


class Command(BaseCommand):
    help = "Rebuild the daily usage rollups of the last N days (idempotent; beat does the last two)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=2, help="How many days back, today included.")

    def handle(self, *args: Any, **options: Any) -> None:
        days = max(1, options["days"])
        today = timezone.localdate()
        for n in range(days):
            day = today - timedelta(days=n)
            rows = services.usage_rollup(day=day)
            self.stdout.write(f"{day}: {rows} row{'s' if rows != 1 else ''}")
