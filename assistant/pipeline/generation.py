"""Steps 13 and 14 of an answer: the model writes it, streamed to the reader as it comes (redacted
sentence by sentence), then parsed, repaired once if unusable, and checked."""

from __future__ import annotations

import logging
from collections.abc import Generator

from assistant.pipeline.payload import AnswerFieldStream, parse_payload
from assistant.pipeline.prompting import messages, repair
from assistant.pipeline.reply import ModelReply, model_reply
from assistant.pipeline.turn import Delta, Event, Stage, Turn
from assistant.prompts import ANSWER_SCHEMA
from gateway import provider
from guardrails.checks import output_stream_redactor
from routing.fallback import stream_with_fallback

logger = logging.getLogger(__name__)


def generate(turn: Turn) -> Generator[Event, None, ModelReply]:
    """Stream the model's answer as Deltas; return what it amounts to once checked."""
    yield Stage("thinking")
    with turn.timed("model"):
        field_stream = AnswerFieldStream()
        # Personal data and secrets are cut out sentence by sentence, before the browser sees them.
        redactor = output_stream_redactor(turn.guard)
        result: provider.ChatResult | None = None
        assert turn.decision is not None
        stream = stream_with_fallback(
            messages(turn), decision=turn.decision, params=turn.config.params(), json_schema=ANSWER_SCHEMA
        )
        for event in stream:
            if isinstance(event, provider.StreamDelta):
                text = redactor.feed(field_stream.feed(event.text))
                if text:
                    yield Delta(text)
            else:
                result = event
        rest = redactor.flush()
        if rest:
            yield Delta(rest)
        assert result is not None
        turn.routed(stream.decision)
    turn.usage = turn.usage + result.usage
    turn.fingerprint = result.system_fingerprint or ""
    turn.raw = result.content

    yield Stage("checking")
    payload, problem = parse_payload(turn.raw, len(turn.sources))
    if payload is None:
        try:
            payload = repair(turn, problem)
        except provider.ProviderError as exc:
            logger.warning("repair call failed: %s", exc)
            payload = None
    return model_reply(turn, payload)
