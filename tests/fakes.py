"""A deterministic stand-in for gateway.provider, used by every test not marked e2e."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from gateway import provider

WORD = re.compile(r"\w+", re.UNICODE)


def fake_vector(text: str, dims: int | None = None) -> list[float]:
    """A hashed bag of words: texts sharing words point the same way, as real embeddings roughly do."""
    dims = dims or settings.EMBEDDING_DIMENSIONS
    vector = [0.0] * dims
    for word in WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "little") % dims
        vector[index] += 1.0 if digest[4] % 2 else -1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def _notify(
    kind: provider.CallKind,
    model: str,
    usage: provider.Usage | None = None,
    error: Exception | None = None,
    tag: str | None = None,
) -> None:
    """Tell the provider's listeners about a fake call, as the real functions do."""
    provider.notify(
        provider.CallRecord(
            kind=kind,
            model=model,
            purpose=tag if tag is not None else provider.current_purpose(),
            usage=usage or provider.Usage(),
            latency_ms=1.0,
            ok=error is None,
            error="" if error is None else str(error),
            error_kind=getattr(getattr(error, "kind", None), "value", ""),
        )
    )


@dataclass
class FakeProvider:
    """Records every call; chat replies come from `replies` (strings, results or exceptions).

    Like the real provider, it tells the provider's listeners (cost accounting) about each call.
    """

    replies: list[Any] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    embedded: list[str] = field(default_factory=list)
    embed_error: Exception | None = None

    def embed(self, texts: Sequence[str], *, kind: str, model: str | None = None) -> provider.Embeddings:
        model = model or settings.EMBEDDING_MODEL
        if self.embed_error is not None:
            _notify("embed", model, error=self.embed_error)
            raise self.embed_error
        self.embedded.extend(texts)
        usage = provider.Usage(prompt_tokens=sum(len(t.split()) for t in texts))
        if texts:
            _notify("embed", model, usage)
        return provider.Embeddings(
            vectors=[fake_vector(t) for t in texts], model=model, usage=usage, latency_ms=0.1
        )

    def _next(
        self, messages: Sequence[dict[str, Any]], kind: provider.CallKind = "chat", **kwargs: Any
    ) -> provider.ChatResult:
        self.calls.append({"messages": list(messages), **kwargs})
        reply = self.replies.pop(0) if self.replies else json.dumps({"answer": "fake", "citations": []})
        params = kwargs.get("params") or provider.ChatParams()
        if isinstance(reply, Exception):
            _notify(kind, params.model or settings.CHAT_MODEL, error=reply)
            raise reply
        if isinstance(reply, provider.ChatResult):
            return reply
        return provider.ChatResult(
            content=reply,
            model=params.model or settings.CHAT_MODEL,
            usage=provider.Usage(prompt_tokens=100, completion_tokens=len(str(reply).split())),
            latency_ms=1.0,
            system_fingerprint="fp_fake",
            finish_reason="stop",
        )

    def chat(self, messages: Sequence[dict[str, Any]], **kwargs: Any) -> provider.ChatResult:
        result = self._next(messages, **kwargs)
        params = kwargs.get("params") or provider.ChatParams()
        _notify("chat", params.model or settings.CHAT_MODEL, result.usage)
        return result

    def chat_stream(
        self, messages: Sequence[dict[str, Any]], **kwargs: Any
    ) -> Iterator[provider.StreamDelta | provider.ChatResult]:
        # Like the real stream: the purpose is the one in force when the stream starts, and the
        # listeners hear of the call when it ends.
        tag = provider.current_purpose()
        result = self._next(messages, "chat_stream", **kwargs)
        params = kwargs.get("params") or provider.ChatParams()
        model = params.model or settings.CHAT_MODEL
        try:
            for piece in re.findall(r"\S+\s*", result.content):
                yield provider.StreamDelta(piece)
        except GeneratorExit:  # closed early: what was generated was still spent
            _notify("chat_stream", model, result.usage, tag=tag)
            raise
        _notify("chat_stream", model, result.usage, tag=tag)
        yield result

    def moderate(self, text: str) -> provider.Moderation | None:
        return None

    def served_models(self, kind: str) -> list[str]:
        return [settings.CHAT_MODEL if kind == "chat" else settings.EMBEDDING_MODEL]
