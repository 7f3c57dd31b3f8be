"""Through the real local servers and a real Celery worker."""

from __future__ import annotations

import math

import pytest

from config.celery import ping
from gateway import provider

pytestmark = pytest.mark.e2e


@pytest.mark.django_db(transaction=True)
def test_a_task_round_trips_through_a_real_worker(celery_worker_process: object) -> None:
    assert ping.delay("hello").get(timeout=30) == "hello"


def test_embeddings_from_the_local_server_are_normalised_and_sized(settings: object) -> None:
    result = provider.embed(["The cat sat on the mat.", "Le chat est assis."], kind="passage")
    assert len(result.vectors) == 2
    assert all(len(v) == settings.EMBEDDING_DIMENSIONS for v in result.vectors)  # type: ignore[attr-defined]
    assert math.isclose(sum(x * x for x in result.vectors[0]), 1.0, rel_tol=1e-3)


def test_query_and_passage_modes_differ_for_e5() -> None:
    query = provider.embed(["opening hours"], kind="query").vectors[0]
    passage = provider.embed(["opening hours"], kind="passage").vectors[0]
    assert query != passage


def test_chat_in_json_mode_returns_schema_shaped_json_with_usage() -> None:
    schema = {
        "title": "answer",
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    result = provider.chat(
        [{"role": "user", "content": "Reply with a JSON object whose answer is the word yes."}],
        params=provider.ChatParams(seed=42, max_tokens=40),
        json_schema=schema,
    )
    import json

    assert "answer" in json.loads(result.content)
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert result.model


def test_seed_makes_sampled_output_repeat() -> None:
    params = provider.ChatParams(seed=1234, temperature=0.8, top_p=0.95, max_tokens=24)
    messages = [{"role": "user", "content": "Name a colour."}]
    assert provider.chat(messages, params=params).content == provider.chat(messages, params=params).content


def test_streaming_yields_text_then_a_final_result() -> None:
    events = list(
        provider.chat_stream(
            [{"role": "user", "content": "Count to five."}], params=provider.ChatParams(seed=3, max_tokens=20)
        )
    )
    assert isinstance(events[-1], provider.ChatResult)
    text = "".join(e.text for e in events[:-1] if isinstance(e, provider.StreamDelta))
    assert text == events[-1].content and text
