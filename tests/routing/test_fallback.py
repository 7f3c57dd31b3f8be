"""Fallback: the next model on a timeout, an outage or a rate limit, never after text has streamed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway import provider
from routing.fallback import chat_with_fallback, stream_with_fallback
from routing.policy import Decision
from tests.fakes import FakeProvider

DECISION = Decision("small", "cheap", "Cheap: a lookup.", {"words": 5}, ("large", "backup"), timeout=7.0)
MESSAGES = [{"role": "user", "content": "When?"}]


def error(kind: provider.ErrorKind) -> provider.ProviderError:
    return provider.ProviderError(f"failed: {kind.value}", kind=kind)


def models_called(fake: FakeProvider) -> list[str]:
    return [call["params"].model for call in fake.calls]


@pytest.mark.parametrize(
    "kind", [provider.ErrorKind.TIMEOUT, provider.ErrorKind.UNAVAILABLE, provider.ErrorKind.RATE_LIMITED]
)
def test_chat_falls_back_on_a_retryable_error_and_records_it(
    fake_provider: FakeProvider, kind: provider.ErrorKind
) -> None:
    fake_provider.replies += [error(kind), "the answer"]

    result, decision = chat_with_fallback(MESSAGES, decision=DECISION, params=provider.ChatParams(seed=1))

    assert result.content == "the answer" and models_called(fake_provider) == ["small", "large"]
    assert fake_provider.calls[0]["params"].timeout == 7.0 and fake_provider.calls[0]["params"].seed == 1
    assert (decision.route, decision.model, decision.fallback_from) == ("fallback", "large", "small")
    assert decision.reason == f"Cheap: a lookup. Fell back to large after small: {kind.value}."
    record = decision.as_json()
    assert record["fallback_from"] == "small" and record["attempts"][0]["kind"] == kind.value
    assert decision.fallbacks == ("backup",)


def test_chat_without_errors_keeps_the_decision(fake_provider: FakeProvider) -> None:
    result, decision = chat_with_fallback(MESSAGES, decision=DECISION)

    assert decision is DECISION and models_called(fake_provider) == ["small"]
    assert decision.as_json()["fallback_from"] is None and "attempts" not in decision.as_json()


def test_chat_does_not_fall_back_on_a_bad_request_or_bad_credentials(fake_provider: FakeProvider) -> None:
    fake_provider.replies += [error(provider.ErrorKind.AUTH), "never used"]

    with pytest.raises(provider.ProviderError) as raised:
        chat_with_fallback(MESSAGES, decision=DECISION)

    assert raised.value.kind == provider.ErrorKind.AUTH and models_called(fake_provider) == ["small"]


def test_the_last_models_error_propagates(fake_provider: FakeProvider) -> None:
    fake_provider.replies += [error(provider.ErrorKind.TIMEOUT)] * 3

    with pytest.raises(provider.ProviderError, match="timeout"):
        chat_with_fallback(MESSAGES, decision=DECISION)

    assert models_called(fake_provider) == ["small", "large", "backup"]
    # The policy's timeout is how long to wait before falling back: the last model has the usual one.
    assert [c["params"].timeout for c in fake_provider.calls] == [7.0, 7.0, None]


def test_a_stream_falls_back_before_any_text(fake_provider: FakeProvider) -> None:
    fake_provider.replies += [error(provider.ErrorKind.UNAVAILABLE), "streamed answer"]

    stream = stream_with_fallback(MESSAGES, decision=DECISION, json_object=True)
    events = list(stream)

    assert "".join(e.text for e in events if isinstance(e, provider.StreamDelta)) == "streamed answer"
    assert isinstance(events[-1], provider.ChatResult) and events[-1].model == "large"
    assert fake_provider.calls[1]["json_object"] is True
    assert (stream.decision.route, stream.decision.model, stream.decision.fallback_from) == (
        "fallback",
        "large",
        "small",
    )


def test_a_stream_does_not_fall_back_after_text_has_streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    models: list[str | None] = []

    def breaks_midway(messages: Any, **kwargs: Any) -> Iterator[provider.StreamDelta | provider.ChatResult]:
        models.append(kwargs["params"].model)
        yield provider.StreamDelta("Expense reports ")
        raise error(provider.ErrorKind.UNAVAILABLE)

    monkeypatch.setattr(provider, "chat_stream", breaks_midway)
    stream = stream_with_fallback(MESSAGES, decision=DECISION)
    seen = []

    with pytest.raises(provider.ProviderError, match="unavailable"):
        seen.extend(stream)

    assert models == ["small"] and seen == [provider.StreamDelta("Expense reports ")]
    assert stream.decision is DECISION


def test_a_stream_without_errors_keeps_the_decision(fake_provider: FakeProvider) -> None:
    stream = stream_with_fallback(MESSAGES, decision=DECISION)

    assert isinstance(list(stream)[-1], provider.ChatResult) and stream.decision is DECISION
