"""Data migrations: what they change in stored rows, run against the current models."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from assistant import services

pytestmark = pytest.mark.django_db


def test_the_old_knowledge_match_default_moves_to_the_new_one() -> None:
    migration = importlib.import_module("assistant.migrations.0004_guardrails_knowledge_match")
    copied = services.assistant_default()
    copied.guardrails = {"knowledge_match": 0.8, "harm_threshold": 0.5}
    copied.save(update_fields=["guardrails"])
    chosen = services.assistant_default()
    chosen.pk = None
    chosen.is_default = False
    chosen.name = "Chosen"
    chosen.guardrails = {"knowledge_match": 0.93}
    chosen.save()

    migration.forwards(apps, None)

    copied.refresh_from_db()
    chosen.refresh_from_db()
    # The default of its day (0.88); the default has moved on since (GuardConfig.knowledge_match).
    assert copied.guardrails == {"knowledge_match": migration.NEW, "harm_threshold": 0.5}
    assert chosen.guardrails == {"knowledge_match": 0.93}
