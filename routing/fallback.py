"""Model calls that fall back to the next model when one times out, is down or is rate-limited.

Wrappers around gateway.provider.chat and chat_stream (the one module that talks to providers).
A retryable ProviderError (timeout, unavailable, rate_limited: `ProviderError.retryable`) moves
on to the decision's next fallback model; any other error, the last model's error, and any error
after the first streamed text propagate unchanged, since the reader has already seen part of
an answer that another model would not continue. See routing/policy.py for where the pipeline
calls these.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from gateway import provider
from routing.policy import Decision

logger = logging.getLogger(__name__)


def _params(
    params: provider.ChatParams | None, model: str, decision: Decision, *, last: bool
) -> provider.ChatParams:
    """The call's parameters for `model`. The policy's timeout is how long to wait before falling
    back, so the last model, with nothing after it, gets the usual PROVIDER_TIMEOUT."""
    params = params or provider.ChatParams()
    timeout = params.timeout if params.timeout is not None else (None if last else decision.timeout)
    return dataclasses.replace(params, model=model, timeout=timeout)


def _attempt(model: str, exc: provider.ProviderError) -> dict[str, str]:
    logger.warning("model %s failed (%s), falling back: %s", model, exc.kind.value, exc)
    return {"model": model, "kind": exc.kind.value, "error": str(exc)[:300]}


def chat_with_fallback(
    messages: Sequence[provider.Message],
    *,
    decision: Decision,
    params: provider.ChatParams | None = None,
    **kwargs: Any,
) -> tuple[provider.ChatResult, Decision]:
    """provider.chat on the decision's model, then its fallbacks; the result and the final decision."""
    attempts: list[dict[str, str]] = []
    models = decision.candidates()
    for index, model in enumerate(models):
        try:
            result = provider.chat(
                messages, params=_params(params, model, decision, last=index == len(models) - 1), **kwargs
            )
        except provider.ProviderError as exc:
            if not exc.retryable or index == len(models) - 1:
                raise
            attempts.append(_attempt(model, exc))
            continue
        return result, decision.fell_back(model, attempts) if attempts else decision
    raise AssertionError("a decision always names at least one model")


class FallbackStream:
    """Iterate for provider.chat_stream's events; `decision` then says which model answered."""

    def __init__(
        self,
        messages: Sequence[provider.Message],
        *,
        decision: Decision,
        params: provider.ChatParams | None,
        kwargs: dict[str, Any],
    ) -> None:
        self.messages = messages
        self.decision = decision
        self.params = params
        self.kwargs = kwargs

    def __iter__(self) -> Iterator[provider.StreamDelta | provider.ChatResult]:
        attempts: list[dict[str, str]] = []
        models = self.decision.candidates()
        for index, model in enumerate(models):
            streamed = False
            try:
                for event in provider.chat_stream(
                    self.messages,
                    params=_params(self.params, model, self.decision, last=index == len(models) - 1),
                    **self.kwargs,
                ):
                    if isinstance(event, provider.StreamDelta):
                        streamed = True
                    elif attempts:
                        self.decision = self.decision.fell_back(model, attempts)
                    yield event
            except provider.ProviderError as exc:
                if streamed or not exc.retryable or index == len(models) - 1:
                    raise
                attempts.append(_attempt(model, exc))
                continue
            return


def stream_with_fallback(
    messages: Sequence[provider.Message],
    *,
    decision: Decision,
    params: provider.ChatParams | None = None,
    **kwargs: Any,
) -> FallbackStream:
    """provider.chat_stream with fallback before the first text; read `.decision` after iterating."""
    return FallbackStream(messages, decision=decision, params=params, kwargs=kwargs)
