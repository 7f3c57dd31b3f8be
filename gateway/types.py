"""What the provider functions take and return: plain dataclasses and the one error type.

Kept apart from `gateway.provider` (which imports these names, so `provider.ChatResult` and the
rest work as before) so that reading the types does not mean reading the SDK calls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

Message = dict[str, Any]
EmbeddingKind = Literal["query", "passage"]
CallKind = Literal["chat", "chat_stream", "embed", "moderate"]


class ErrorKind(StrEnum):
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    UNSUPPORTED = "unsupported"
    BAD_RESPONSE = "bad_response"


class ProviderError(Exception):
    """A model call that did not produce a usable result."""

    def __init__(self, message: str, *, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def retryable(self) -> bool:
        return self.kind in {ErrorKind.TIMEOUT, ErrorKind.UNAVAILABLE, ErrorKind.RATE_LIMITED}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # True when the server reported no usage and the counts are our estimate.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.estimated or other.estimated,
        )


@dataclass(frozen=True)
class CallRecord:
    """One model call as the listeners see it, successful or not."""

    kind: CallKind
    model: str
    purpose: str | None  # set with `purpose(...)`; None: the listener decides from `kind`
    usage: Usage
    latency_ms: float
    ok: bool = True
    error: str = ""
    error_kind: str = ""


def estimate_tokens(text: str) -> int:
    """About four characters a token in English: good enough to count what a server did not."""
    return max(1, round(len(text) / 4)) if text else 0


def prompt_estimate(messages: Sequence[Message]) -> int:
    # Each message costs a few tokens of framing besides its text.
    return sum(estimate_tokens(str(m.get("content") or "")) + 4 for m in messages)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text as the model wrote it; may be invalid

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict, or {} when the model wrote something that is not an object."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ChatParams:
    """Sampling settings. Pinned per assistant so answers can be reproduced."""

    model: str | None = None  # None: settings.CHAT_MODEL
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    max_tokens: int = 512
    timeout: float | None = None  # None: settings.PROVIDER_TIMEOUT


@dataclass(frozen=True)
class ChatResult:
    content: str
    model: str
    usage: Usage
    latency_ms: float
    system_fingerprint: str | None = None
    finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class StreamDelta:
    text: str


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    model: str
    usage: Usage
    latency_ms: float


@dataclass(frozen=True)
class Moderation:
    flagged: bool
    model: str
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FineTuneStatus:
    id: str
    status: str  # validating_files, queued, running, succeeded, failed, cancelled
    model: str
    fine_tuned_model: str | None = None
    error: str = ""
    trained_tokens: int | None = None
