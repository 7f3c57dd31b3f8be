from __future__ import annotations

from django.apps import AppConfig


class AnswerCacheConfig(AppConfig):
    name = "answer_cache"
    verbose_name = "Answer cache"
