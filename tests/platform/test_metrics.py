"""/metrics: Prometheus text format, for staff or a bearer token."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from assistant import services
from assistant.models import Answer, Flag
from usage.models import ModelCall

pytestmark = pytest.mark.django_db

ODD = 'odd "name"'  # a model name that needs escaping
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+-]+$')


@pytest.fixture
def data(member: Any) -> None:
    assistant = services.assistant_default()
    answer = Answer.objects.create(
        assistant=assistant,
        user=member,
        question="q",
        model="smollm2",
        temperature=0,
        top_p=1,
        max_tokens=10,
        prompt=assistant.prompt,
        latency_ms={"total": 700.0, "retrieval": 40.0, "model": 600.0},
    )
    Answer.objects.create(
        assistant=assistant,
        user=member,
        question="q",
        model="smollm2",
        temperature=0,
        top_p=1,
        max_tokens=10,
        prompt=assistant.prompt,
        cache_hit=True,
        cached_from=answer,
        latency_ms={"total": 20.0},
    )
    services.flag_create(answer=answer, user=member, category=Flag.Category.WRONG)
    ModelCall.objects.create(
        model='odd "name"',
        kind="chat",
        purpose="answer",
        prompt_tokens=100,
        completion_tokens=7,
        cost=Decimal("0.25"),
        latency_ms=300.0,
    )
    ModelCall.objects.create(
        model="m", kind="embed", purpose="embedding", prompt_tokens=5, price_missing=True
    )


def _value(text: str, name: str, **labels: str) -> float:
    """The value of the one sample with this name and exactly these labels, read by the parser
    Prometheus's own client uses (label order and "1" against "1.0" mean nothing to Prometheus)."""
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels == labels
    ]
    return value


def test_staff_read_every_metric_in_the_text_format(client: Client, owner: Any, data: None) -> None:
    client.force_login(owner)

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all(SAMPLE.match(line) for line in lines), [line for line in lines if not SAMPLE.match(line)]
    assert _value(text, "groundwork_answers_total", model="smollm2", cache_hit="true", abstained="false") == 1
    assert _value(text, "groundwork_cache_hits_total") == 1
    assert _value(text, "groundwork_flags_total", source="user", category="wrong") == 1
    assert _value(text, "groundwork_model_calls_total", model=ODD, purpose="answer", status="ok") == 1
    assert _value(text, "groundwork_model_tokens_total", model=ODD, purpose="answer", type="completion") == 7
    assert _value(text, "groundwork_model_cost_usd_total", model=ODD, purpose="answer") == 0.25
    assert _value(text, "groundwork_model_calls_price_missing_total", model="m") == 1
    assert _value(text, "groundwork_answer_latency_seconds_bucket", stage="total", le="0.05") == 1
    assert _value(text, "groundwork_answer_latency_seconds_bucket", stage="total", le="1.0") == 2
    assert _value(text, "groundwork_answer_latency_seconds_count", stage="model") == 1
    assert _value(text, "groundwork_model_call_latency_seconds_bucket", purpose="answer", le="0.25") == 0
    assert _value(text, "groundwork_model_call_latency_seconds_bucket", purpose="answer", le="0.5") == 1
    assert 'model="odd \\"name\\""' in text  # a quote in a label value is escaped
    assert "# TYPE groundwork_answer_latency_seconds histogram" in text


def test_anonymous_and_non_staff_are_refused(client: Client, member: Any) -> None:
    refused = client.get("/metrics")
    assert refused.status_code == 401 and "METRICS_TOKEN" in refused.content.decode()
    client.force_login(member)
    assert client.get("/metrics").status_code == 403


def test_prometheus_reads_them_with_the_token(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = "s3cret-token"

    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics").status_code == 401
