"""Stored guardrail settings that spelled out the old `knowledge_match` default move to the new one.

Until 2026-11-24 a knowledge-base match at 0.80 vouched for privacy and specialised-advice flags
only; now `knowledge_match` vouches for any flag the harm classifier alone raised, and its
default is 0.88 (docs/benchmarks-guardrails.md). At 0.80 under the new rule, 733 of 927
Do-Not-Answer prompts asked of a health FAQ would get through, so an assistant that copied the
old default from the admin's list of defaults gets the new one. Other values are the admin's
own choice and stay.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

OLD, NEW = 0.8, 0.88


def forwards(apps: Any, schema_editor: Any) -> None:
    Assistant = apps.get_model("assistant", "Assistant")
    for assistant in Assistant.objects.filter(guardrails__knowledge_match=OLD):
        assistant.guardrails["knowledge_match"] = NEW
        assistant.save(update_fields=["guardrails"])


def backwards(apps: Any, schema_editor: Any) -> None:
    Assistant = apps.get_model("assistant", "Assistant")
    for assistant in Assistant.objects.filter(guardrails__knowledge_match=NEW):
        assistant.guardrails["knowledge_match"] = OLD
        assistant.save(update_fields=["guardrails"])


class Migration(migrations.Migration):
    dependencies = [("assistant", "0003_guardrails_routing_cache")]

    operations = [migrations.RunPython(forwards, backwards)]
