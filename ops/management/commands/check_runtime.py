from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from gateway import provider
from ops import selectors as ops_selectors


class Command(BaseCommand):
    help = "Check that the configured models answer and EMBEDDING_DIMENSIONS matches the embedding model."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = provider.embed(["dimension probe"], kind="query")
        except provider.ProviderError as exc:
            # ProviderError already names EMBEDDING_DIMENSIONS when the size is wrong.
            raise CommandError(str(exc)) from exc
        try:
            models = provider.served_models("chat")
        except provider.ProviderError as exc:
            raise CommandError(f"{exc} (OPENAI_BASE_URL={settings.OPENAI_BASE_URL})") from exc
        if models and settings.CHAT_MODEL not in models:
            raise CommandError(
                f"CHAT_MODEL={settings.CHAT_MODEL} is not served by {settings.OPENAI_BASE_URL}; "
                f"it offers: {', '.join(models[:8])}"
            )
        self.stdout.write(
            f"models ok: chat {settings.CHAT_MODEL}, embeddings {result.model} "
            f"({len(result.vectors[0])} dimensions)"
        )
        self._report_prices()

    def _report_prices(self) -> None:
        """A model without a price is reported, not failed: its calls are still recorded."""
        missing = ops_selectors.models_without_price()
        if missing:
            self.stdout.write(
                self.style.WARNING(
                    f"prices missing for: {', '.join(missing)}. Their calls are recorded with an unknown "
                    "cost, never as free: add them in the admin under Usage and cost > Model prices."
                )
            )
        else:
            self.stdout.write("prices ok: every configured model has a price")
