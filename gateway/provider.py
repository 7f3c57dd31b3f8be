"""The one module that talks to model providers, through the official openai SDK.

Chat (plain, JSON mode, streaming, tools), embeddings (batched) and moderation. Everything else
in Groundwork calls these functions and receives plain dataclasses; no other module imports
`openai`, and tests replace the functions here.

Errors become `ProviderError` with a `kind` the caller can act on (retry, degrade, tell the
user) and a message a person can read.

After every chat, stream (when it ends), embedding and moderation call, the listeners added with
`add_listener` receive a `CallRecord` (model, purpose, tokens, latency, ok or error); cost
accounting (the usage app) is one such listener. `with purpose("repair"):` tags the calls made
inside it. This module imports no Django app, so the listeners are plain callables.
"""

from __future__ import annotations

import array
import base64
import contextvars
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import openai
from django.conf import settings

from gateway.fingerprints import VOLATILE_MODEL_FIELDS as VOLATILE_MODEL_FIELDS
from gateway.fingerprints import fingerprint_derive as fingerprint_derive
from gateway.types import CallKind as CallKind
from gateway.types import CallRecord as CallRecord
from gateway.types import ChatParams as ChatParams
from gateway.types import ChatResult as ChatResult
from gateway.types import EmbeddingKind as EmbeddingKind
from gateway.types import Embeddings as Embeddings
from gateway.types import ErrorKind as ErrorKind
from gateway.types import FineTuneStatus as FineTuneStatus
from gateway.types import Message as Message
from gateway.types import Moderation as Moderation
from gateway.types import ProviderError as ProviderError
from gateway.types import StreamDelta as StreamDelta
from gateway.types import ToolCall as ToolCall
from gateway.types import Usage as Usage
from gateway.types import estimate_tokens as estimate_tokens
from gateway.types import prompt_estimate as prompt_estimate

logger = logging.getLogger(__name__)


# --- call records and listeners -------------------------------------------------------------


Listener = Callable[[CallRecord], object]
_listeners: list[Listener] = []
_purpose: contextvars.ContextVar[str | None] = contextvars.ContextVar("provider_purpose", default=None)


def add_listener(listener: Listener) -> None:
    """Call `listener` after every model call; adding the same one twice has no effect."""
    if listener not in _listeners:
        _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def current_purpose() -> str | None:
    return _purpose.get()


@contextmanager
def purpose(name: str) -> Iterator[None]:
    """Tag the model calls made inside this block (answer, repair, guardrail, judge, routing...).

    A context variable: enter and leave it around plain calls, not across a generator's `yield`.
    """
    token = _purpose.set(name)
    try:
        yield
    finally:
        _purpose.reset(token)


def notify(record: CallRecord) -> None:
    """Give `record` to every listener. A failing listener is logged, never raised to the caller:
    accounting must not break an answer."""
    for listener in list(_listeners):
        try:
            listener(record)
        except Exception:
            logger.exception("model call listener %r failed", listener)


def _failed(
    kind: CallKind,
    model: str,
    tag: str | None,
    started: float,
    error: ProviderError,
    usage: Usage | None = None,
) -> None:
    notify(
        CallRecord(
            kind=kind,
            model=model,
            purpose=tag,
            usage=usage or Usage(),
            latency_ms=(time.perf_counter() - started) * 1000,
            ok=False,
            error=str(error)[:500],
            error_kind=error.kind.value,
        )
    )


@cache
def _client(base_url: str | None, api_key: str) -> openai.OpenAI:
    # The SDK retries connection errors, 408, 429 and 5xx with backoff before we see them.
    return openai.OpenAI(
        base_url=base_url,
        api_key=api_key,
        timeout=settings.PROVIDER_TIMEOUT,
        max_retries=settings.PROVIDER_MAX_RETRIES,
    )


def chat_client() -> openai.OpenAI:
    return _client(settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY)


def embeddings_client() -> openai.OpenAI:
    return _client(settings.EMBEDDINGS_BASE_URL, settings.OPENAI_API_KEY)


def _translate(exc: Exception, what: str) -> ProviderError:
    """Map an SDK exception to a ProviderError a caller can act on."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(f"The {what} model did not answer in time.", kind=ErrorKind.TIMEOUT)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"The {what} model server cannot be reached.", kind=ErrorKind.UNAVAILABLE)
    if isinstance(exc, openai.RateLimitError):
        return ProviderError(
            f"The {what} model is rate-limited; try again shortly.", kind=ErrorKind.RATE_LIMITED
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderError(
            f"The {what} provider refused our credentials (OPENAI_API_KEY).", kind=ErrorKind.AUTH
        )
    if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError | openai.NotFoundError):
        detail = str(getattr(exc, "message", exc))[:300]
        return ProviderError(f"The {what} model rejected the request: {detail}", kind=ErrorKind.BAD_REQUEST)
    if isinstance(exc, openai.APIStatusError):
        return ProviderError(
            f"The {what} model server failed (HTTP {exc.status_code}).", kind=ErrorKind.UNAVAILABLE
        )
    return ProviderError(f"The {what} model call failed: {exc}", kind=ErrorKind.BAD_RESPONSE)


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    details = getattr(raw, "prompt_tokens_details", None)
    return Usage(
        prompt_tokens=int(getattr(raw, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(raw, "completion_tokens", 0) or 0),
        cached_tokens=int(getattr(details, "cached_tokens", 0) or 0) if details else 0,
    )


def _response_format(json_schema: dict[str, Any] | None, json_object: bool) -> dict[str, Any] | None:
    if json_schema is not None:
        if settings.CHAT_JSON_MODE == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": json_schema.get("title", "answer"), "schema": json_schema},
            }
        if settings.CHAT_JSON_MODE == "json_object_schema":
            # llama.cpp's server enforces the schema through a grammar in this form.
            return {"type": "json_object", "schema": json_schema}
        return {"type": "json_object"}
    if json_object:
        return {"type": "json_object"}
    return None


def _request(
    messages: Sequence[Message],
    params: ChatParams,
    json_schema: dict[str, Any] | None,
    json_object: bool,
    tools: Sequence[dict[str, Any]] | None,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": params.model or settings.CHAT_MODEL,
        "messages": list(messages),
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "timeout": params.timeout or settings.PROVIDER_TIMEOUT,
    }
    if params.seed is not None:
        request["seed"] = params.seed
    response_format = _response_format(json_schema, json_object)
    if response_format is not None:
        request["response_format"] = response_format
    if tools:
        request["tools"] = list(tools)
        request["tool_choice"] = "auto"
    return request


def chat(
    messages: Sequence[Message],
    *,
    params: ChatParams | None = None,
    json_schema: dict[str, Any] | None = None,
    json_object: bool = False,
    tools: Sequence[dict[str, Any]] | None = None,
) -> ChatResult:
    """One chat completion. With `json_schema` the provider is asked to follow it (JSON mode)."""
    params = params or ChatParams()
    request = _request(messages, params, json_schema, json_object, tools)
    tag = current_purpose()
    started = time.perf_counter()
    try:
        response = chat_client().chat.completions.create(**request)
    except openai.OpenAIError as exc:
        error = _translate(exc, "chat")
        _failed("chat", request["model"], tag, started, error)
        raise error from exc
    latency_ms = (time.perf_counter() - started) * 1000
    usage = _usage(response.usage)
    if not response.choices:
        error = ProviderError("The chat model returned no choices.", kind=ErrorKind.BAD_RESPONSE)
        _failed("chat", request["model"], tag, started, error)
        raise error
    notify(CallRecord(kind="chat", model=request["model"], purpose=tag, usage=usage, latency_ms=latency_ms))
    choice = response.choices[0]
    tool_calls = tuple(
        ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments or "")
        for call in (choice.message.tool_calls or ())
        if getattr(call, "function", None) is not None
    )
    return ChatResult(
        content=choice.message.content or "",
        model=response.model or request["model"],
        usage=usage,
        latency_ms=latency_ms,
        system_fingerprint=_fingerprint(
            getattr(response, "system_fingerprint", None), request["model"], response.model
        ),
        finish_reason=choice.finish_reason,
        tool_calls=tool_calls,
    )


@dataclass
class _Streamed:
    """What a chat stream has said so far: its text, and the model, usage and ending it reported."""

    model: str
    parts: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    fingerprint: str | None = None
    finish_reason: str | None = None

    def read(self, chunk: Any) -> Iterator[StreamDelta]:
        self.model = chunk.model or self.model
        self.fingerprint = getattr(chunk, "system_fingerprint", None) or self.fingerprint
        if chunk.usage is not None:
            self.usage = _usage(chunk.usage)
        for choice in chunk.choices or ():
            self.finish_reason = choice.finish_reason or self.finish_reason
            text = choice.delta.content if choice.delta else None
            if text:
                self.parts.append(text)
                yield StreamDelta(text)


def chat_stream(
    messages: Sequence[Message],
    *,
    params: ChatParams | None = None,
    json_schema: dict[str, Any] | None = None,
    json_object: bool = False,
) -> Iterator[StreamDelta | ChatResult]:
    """Stream a chat completion: `StreamDelta`s as text arrives, then one final `ChatResult`.

    Closing the generator early (the user pressed stop) closes the HTTP stream, which makes the
    server stop generating.
    """
    params = params or ChatParams()
    request = _request(messages, params, json_schema, json_object, None)
    request["stream"] = True
    # llama.cpp's server ignores this and sends no usage: _stream_usage estimates it then.
    request["stream_options"] = {"include_usage": True}
    tag = current_purpose()
    started = time.perf_counter()
    got = _Streamed(model=request["model"])
    try:
        try:
            stream = chat_client().chat.completions.create(**request)
            try:
                for chunk in stream:
                    yield from got.read(chunk)
            finally:
                stream.close()
        except openai.OpenAIError as exc:
            error = _translate(exc, "chat")
            spent = _stream_usage(got.usage, messages, len(got.parts)) if got.parts else Usage()
            _failed("chat_stream", request["model"], tag, started, error, spent)
            raise error from exc
    except GeneratorExit:
        # Closed early (the user pressed stop): the tokens made so far were still spent.
        usage = _stream_usage(got.usage, messages, len(got.parts))
        latency_ms = (time.perf_counter() - started) * 1000
        notify(CallRecord("chat_stream", request["model"], tag, usage, latency_ms))
        raise
    usage = _stream_usage(got.usage, messages, len(got.parts))
    latency_ms = (time.perf_counter() - started) * 1000
    if not got.parts and got.finish_reason is None:
        # The server closed the stream without finishing (llama.cpp does when interrupted).
        error = ProviderError("The chat model stopped answering mid-stream.", kind=ErrorKind.UNAVAILABLE)
        _failed("chat_stream", request["model"], tag, started, error, usage)
        raise error
    notify(CallRecord("chat_stream", request["model"], tag, usage, latency_ms))
    yield ChatResult(
        content="".join(got.parts),
        model=got.model,
        usage=usage,
        latency_ms=latency_ms,
        system_fingerprint=_fingerprint(got.fingerprint, request["model"], got.model),
        finish_reason=got.finish_reason,
    )


# --- fingerprints ---------------------------------------------------------------------------

_derived_fingerprints: dict[tuple[str, str, str], str] = {}


def _fingerprint(reported: str | None, requested: str, served: str | None) -> str | None:
    """The server's own fingerprint, or one derived from its model listing, once per process.

    None when the server sent none and its listing cannot be read now (tried again next call):
    a fingerprint must never fail an answer, and a wrong one is worse than none.
    """
    if reported:
        return reported
    client = chat_client()
    base_url = str(client.base_url)
    model = served or requested
    key = (base_url, requested, model)
    if key not in _derived_fingerprints:
        try:
            page = client.with_options(timeout=5.0, max_retries=0).models.list()
        except openai.OpenAIError as exc:
            logger.warning("no system_fingerprint: the chat server's model listing failed (%s)", exc)
            return None
        # Only what the server sent: fields the SDK adds as None would change with the SDK.
        entries = {item.id: item.model_dump(exclude_unset=True) for item in page.data}
        entry = entries.get(model) or entries.get(requested)
        _derived_fingerprints[key] = fingerprint_derive(base_url=base_url, model=model, entry=entry)
    return _derived_fingerprints[key]


def _stream_usage(usage: Usage, messages: Sequence[Message], chunks: int) -> Usage:
    """The usage a stream reported, with what it left out estimated (and marked so).

    Some servers (llama.cpp's) send no usage with streams: each text chunk carries about one
    token, and the prompt is counted from its characters.
    """
    completion, prompt, estimated = usage.completion_tokens, usage.prompt_tokens, usage.estimated
    if completion == 0 and chunks:
        completion, estimated = chunks, True
    if prompt == 0:
        prompt, estimated = prompt_estimate(messages), True
    return Usage(prompt, completion, usage.cached_tokens, estimated)


def _vector(embedding: object) -> list[float]:
    """One vector as the server sent it. Asked for as base64 (little-endian float32, OpenAI's
    format), which saves ~3 ms a query over a JSON list (docs/benchmarks-cache.md). A server
    that ignores the encoding sends the list, which is taken as it is."""
    if isinstance(embedding, str):
        values = array.array("f", base64.b64decode(embedding))
        if sys.byteorder == "big":
            values.byteswap()
        return values.tolist()
    if isinstance(embedding, list):
        return [float(x) for x in embedding]
    raise ProviderError(
        "The embedding model returned a vector in an unknown form.", kind=ErrorKind.BAD_RESPONSE
    )


def embed(texts: Sequence[str], *, kind: EmbeddingKind, model: str | None = None) -> Embeddings:
    """Embed `texts` in batches of settings.EMBEDDING_BATCH_SIZE, keeping their order.

    `kind` selects the query or passage side for models that embed them differently (e5).
    """
    model = model or settings.EMBEDDING_MODEL
    if not texts:
        return Embeddings(vectors=[], model=model, usage=Usage(), latency_ms=0.0)
    extra: dict[str, Any] = {}
    if settings.EMBEDDING_INPUT_TYPE:
        extra["extra_body"] = {"input_type": kind}
    if model.startswith("text-embedding-3"):
        extra["dimensions"] = settings.EMBEDDING_DIMENSIONS
    client = embeddings_client()
    vectors: list[list[float]] = []
    usage = Usage()
    tag = current_purpose()
    started = time.perf_counter()
    size = settings.EMBEDDING_BATCH_SIZE
    try:
        for start in range(0, len(texts), size):
            batch = list(texts[start : start + size])
            try:
                response = client.embeddings.create(
                    model=model, input=batch, encoding_format="base64", **extra
                )
            except openai.OpenAIError as exc:
                raise _translate(exc, "embedding") from exc
            rows = sorted(response.data, key=lambda row: row.index)
            if len(rows) != len(batch):
                raise ProviderError(
                    f"The embedding model returned {len(rows)} vectors for {len(batch)} texts.",
                    kind=ErrorKind.BAD_RESPONSE,
                )
            vectors.extend(_vector(row.embedding) for row in rows)
            reported = int(getattr(response.usage, "prompt_tokens", 0) or 0)
            usage = usage + (
                Usage(prompt_tokens=reported)
                if reported
                else Usage(prompt_tokens=sum(estimate_tokens(t) for t in batch), estimated=True)
            )
        dims = len(vectors[0])
        if dims != settings.EMBEDDING_DIMENSIONS:
            raise ProviderError(
                f"The embedding model {model} returns {dims} dimensions but EMBEDDING_DIMENSIONS is "
                f"{settings.EMBEDDING_DIMENSIONS}: set EMBEDDING_DIMENSIONS={dims} and re-index.",
                kind=ErrorKind.BAD_RESPONSE,
            )
    except ProviderError as error:
        _failed("embed", model, tag, started, error, usage)
        raise
    latency_ms = (time.perf_counter() - started) * 1000
    notify(CallRecord(kind="embed", model=model, purpose=tag, usage=usage, latency_ms=latency_ms))
    return Embeddings(vectors=vectors, model=model, usage=usage, latency_ms=latency_ms)


def moderate(text: str) -> Moderation | None:
    """The provider's moderation verdict, or None when moderation is not configured."""
    if not settings.MODERATION_ENABLED:
        return None
    tag = current_purpose()
    started = time.perf_counter()
    try:
        response = chat_client().moderations.create(input=text)
    except openai.OpenAIError as exc:
        error = _translate(exc, "moderation")
        _failed("moderate", "moderation", tag, started, error)
        raise error from exc
    # Moderation is free at OpenAI and reports no usage; its input is counted all the same.
    notify(
        CallRecord(
            kind="moderate",
            model=response.model,
            purpose=tag,
            usage=Usage(prompt_tokens=estimate_tokens(text), estimated=True),
            latency_ms=(time.perf_counter() - started) * 1000,
        )
    )
    result = response.results[0]
    scores = {name: float(score) for name, score in result.category_scores.model_dump().items() if score}
    return Moderation(flagged=bool(result.flagged), model=response.model, scores=scores)


def served_models(kind: Literal["chat", "embeddings"]) -> list[str]:
    """Model ids the chat or embeddings server lists; a cheap liveness probe."""
    client = chat_client() if kind == "chat" else embeddings_client()
    try:
        page = client.with_options(timeout=5.0, max_retries=0).models.list()
    except openai.OpenAIError as exc:
        raise _translate(exc, kind) from exc
    return [item.id for item in page.data]


# --- fine-tuning (routing's distillation; OpenAI only) -------------------------------------


def finetune_file_upload(content: bytes, *, filename: str) -> str:
    """Upload JSONL training data for fine-tuning; returns the provider's file id."""
    try:
        uploaded = chat_client().files.create(file=(filename, content), purpose="fine-tune")
    except openai.OpenAIError as exc:
        raise _translate(exc, "fine-tuning") from exc
    return str(uploaded.id)


def _finetune_status(job: Any) -> FineTuneStatus:
    error = getattr(job, "error", None)
    message = str(getattr(error, "message", "") or "") if error else ""
    return FineTuneStatus(
        id=str(job.id),
        status=str(job.status),
        model=str(job.model),
        fine_tuned_model=getattr(job, "fine_tuned_model", None),
        error=message,
        trained_tokens=getattr(job, "trained_tokens", None),
    )


def finetune_start(
    *, training_file: str, validation_file: str | None, model: str, suffix: str = ""
) -> FineTuneStatus:
    """Start a fine-tuning job on uploaded files."""
    extra: dict[str, Any] = {}
    if validation_file:
        extra["validation_file"] = validation_file
    if suffix:
        extra["suffix"] = suffix[:40]
    try:
        job = chat_client().fine_tuning.jobs.create(training_file=training_file, model=model, **extra)
    except openai.OpenAIError as exc:
        raise _translate(exc, "fine-tuning") from exc
    return _finetune_status(job)


def finetune_retrieve(job_id: str) -> FineTuneStatus:
    """The current state of a fine-tuning job."""
    try:
        job = chat_client().fine_tuning.jobs.retrieve(job_id)
    except openai.OpenAIError as exc:
        raise _translate(exc, "fine-tuning") from exc
    return _finetune_status(job)
