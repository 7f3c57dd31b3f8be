"""Routing and fallback against the real local chat model."""

from __future__ import annotations

import dataclasses

import pytest
from django.conf import settings

from assistant import services as assistant_services
from gateway import provider
from routing.fallback import stream_with_fallback
from routing.policy import route_decide

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def test_a_timed_out_model_falls_back_and_the_stream_completes() -> None:
    assistant = assistant_services.assistant_default()
    assistant.routing = {
        "cheap_model": settings.CHAT_MODEL,
        "strong_model": settings.CHAT_MODEL,
        "fallback_models": ["the-same-server"],
        "timeout_seconds": 1,
    }
    decision = route_decide(assistant=assistant, question="What is a licence?", retrieval_score=0.9)
    assert decision.route == "cheap" and decision.fallbacks == ("the-same-server",)
    # The first attempt cannot answer in a millisecond: it times out and the next model answers.
    decision = dataclasses.replace(decision, timeout=0.001, fallbacks=(settings.CHAT_MODEL,))

    stream = stream_with_fallback(
        [{"role": "user", "content": "Say hello in one word."}],
        decision=decision,
        params=provider.ChatParams(max_tokens=8, seed=1),
    )
    events = list(stream)

    assert isinstance(events[-1], provider.ChatResult) and events[-1].content.strip()
    assert stream.decision.route == "fallback" and stream.decision.attempts[0]["kind"] == "timeout"
    assert "Fell back to" in stream.decision.reason
