from __future__ import annotations

from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Usage and cost"

    def ready(self) -> None:
        # The provider imports no Django app; it tells its listeners about each call instead.
        from gateway import provider
        from usage import services

        provider.add_listener(services.call_record)
