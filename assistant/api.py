"""The OpenAI-compatible API: any OpenAI client can use Groundwork as a grounded model.

    client = openai.OpenAI(base_url="https://groundwork.example/v1", api_key="gw_…")
    client.chat.completions.create(model="groundwork", messages=[{"role": "user", "content": "…"}])

- `GET /v1/models` lists the assistants; a model id is the assistant's name as a slug.
  `GET /v1/models/<id>` returns one.
- `POST /v1/chat/completions` answers the last user message. Earlier user/assistant pairs are the
  conversation history. `model` picks the assistant (none: the default one). System messages,
  temperature, top_p, seed, max_tokens, n, tools and response_format are ignored: the
  assistant's pinned prompt and sampling settings win, so that every answer can be reproduced
  from its record.
- Every completion carries one extra top-level field, `groundwork`:
  {answer_id, citations: [{n, chunk_id, document_id, title, filename, page, heading, quote}],
  abstained, grounded, confidence, suggestions, prompt_version, latency_ms (total, a number)}.
  SDKs keep unknown fields: `completion.model_extra["groundwork"]` in the Python SDK.
- With `stream: true` the answer arrives as `chat.completion.chunk` server-sent events while it is
  written; the final chunk (finish_reason "stop") carries `groundwork`, then `data: [DONE]`.
  Chunk ids are random (the answer is saved only when it is complete): use
  `groundwork.answer_id` to refer to the answer. `stream_options.include_usage` is honoured.
  A stream cannot take text back: when the pipeline repairs or replaces what it streamed, the
  saved text follows the streamed draft after a blank line. A failure after the first chunk is an
  error event (`data: {"error": …}`), which OpenAI's SDKs raise as APIError.
- Authentication: `Authorization: Bearer <token>`, a token from the API tokens page. Retrieval
  runs with the token owner's permissions, exactly as in the chat page. Sessions are not
  accepted here, which is why the views can be exempt from CSRF.
- Errors are OpenAI-shaped JSON, `{"error": {"message", "type", "param", "code"}}`: 400 for bad
  input, 401 for a missing or wrong token, 404 for an unknown model, 429 (code
  "budget_exceeded", not retried by the SDKs) when the user's or group's budget is used up,
  429 (code "too_many_wrong_tokens", with `Retry-After`) for every request from an address that
  sent too many wrong tokens (assistant.throttle),
  502 (504 on a timeout) when the language or embedding model fails.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Literal

from django.contrib.auth.models import User
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from openai.types import CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.shared import ErrorObject
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from assistant import pipeline, serializers, services, throttle
from assistant.models import Answer, Assistant
from common.sse import sse_event, sse_response
from gateway import provider
from usage import services as usage

logger = logging.getLogger(__name__)

OWNER = "groundwork"
JsonObject = dict[str, Any]


class ApiError(Exception):
    """A request the API refuses; becomes an OpenAI-style error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry: bool | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.retry = retry
        self.retry_after = retry_after

    def body(self) -> JsonObject:
        error = ErrorObject(message=self.message, type=self.error_type, param=self.param, code=self.code)
        return {"error": error.model_dump(exclude_unset=True)}

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        if self.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="groundwork"'
        if self.retry is not None:
            # OpenAI's SDKs obey this header instead of retrying every 5xx on their own.
            response["x-should-retry"] = "true" if self.retry else "false"
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        return response


def _provider_failure(exc: provider.ProviderError) -> ApiError:
    hint = " Try again in a moment." if exc.retryable else ""
    return ApiError(
        504 if exc.kind == provider.ErrorKind.TIMEOUT else 502,
        f"{exc}{hint}",
        error_type="server_error",
        code=exc.kind.value,
        retry=exc.retryable,
    )


def _authenticate(request: HttpRequest) -> User:
    wait = throttle.api_token_retry_after(request=request)
    if wait is not None:
        raise ApiError(
            429,
            f"Too many requests with a wrong API key came from your address: try again in {wait} "
            "seconds, with a token from the API tokens page.",
            error_type="requests",
            code="too_many_wrong_tokens",
            retry=False,  # the SDKs' quick retries would only be refused again
            retry_after=wait,
        )
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise ApiError(
            401,
            "No API key provided: send the header `Authorization: Bearer <token>`. "
            "Create a token on the API tokens page.",
            code="invalid_api_key",
        )
    user = services.api_token_authenticate(raw.strip())
    if user is None:
        throttle.api_token_failure_record(request=request)
        raise ApiError(
            401,
            "Incorrect API key provided: it was revoked, mistyped, or its user is inactive.",
            code="invalid_api_key",
        )
    return user


ApiView = Callable[..., HttpResponseBase]


def api_view(method: str) -> Callable[[ApiView], ApiView]:
    """Method check, bearer-token authentication and JSON errors for an API view.

    The view receives the token's user after the request. Every failure is an OpenAI-style JSON
    error, even an unexpected one, since the clients are programs that parse the body.
    """

    def decorator(view: ApiView) -> ApiView:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method != method:
                wrong = ApiError(405, f"Use {method} for this endpoint.", code="method_not_allowed")
                refused = wrong.response()
                refused["Allow"] = method
                return refused
            try:
                user = _authenticate(request)
                return view(request, user, *args, **kwargs)
            except ApiError as exc:
                return exc.response()
            except Exception:
                logger.exception("API request %s %s failed", request.method, request.path)
                failure = "Groundwork failed to handle this request; the error is logged."
                return ApiError(500, failure, error_type="server_error").response()

        return csrf_exempt(wrapper)

    return decorator


# --- models -----------------------------------------------------------------------------------


def _model_json(assistant: Assistant) -> JsonObject:
    entry = Model(
        id=serializers.model_id(assistant),
        object="model",
        # An assistant has no date of its own; its current prompt version is what it is "built" on.
        created=int(assistant.prompt.created_at.timestamp()),
        owned_by=OWNER,
    )
    return entry.model_dump(exclude_unset=True)


def _assistant_for(model: str | None) -> Assistant:
    if not model:
        return services.assistant_default()
    if not Assistant.objects.exists():
        services.assistant_default()  # a fresh install makes its default assistant on first use
    assistant = serializers.assistant_named(model)
    if assistant is None:
        raise ApiError(
            404,
            f"The model {model!r} does not exist: GET /v1/models lists the assistants you can use.",
            param="model",
            code="model_not_found",
        )
    return assistant


@api_view("GET")
def models(request: HttpRequest, user: User) -> HttpResponse:
    services.assistant_default()  # a fresh install has an assistant to offer
    seen: set[str] = set()
    data = []
    for assistant in Assistant.objects.select_related("prompt"):
        entry = _model_json(assistant)
        if entry["id"] not in seen:
            seen.add(entry["id"])
            data.append(entry)
    return JsonResponse({"object": "list", "data": data})


@api_view("GET")
def model(request: HttpRequest, user: User, model_id: str) -> HttpResponse:
    return JsonResponse(_model_json(_assistant_for(model_id)))


# --- chat completions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Asked:
    """What a chat completion request asks: the question, with the conversation before it."""

    question: str
    history: list[tuple[str, str]]


MAX_JSON_DEPTH = 32  # a chat request nests five levels deep; anything far past that is not one


def _depth(value: object) -> int:
    """How deeply `value` nests lists and objects, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend(
                    (child, level + 1) for child in (item.values() if isinstance(item, dict) else item)
                )
    return deepest


def _json_body(request: HttpRequest) -> JsonObject:
    too_deep = ApiError(400, f"The request body nests more than {MAX_JSON_DEPTH} levels deep.")
    try:
        body = json.loads(request.body)
    except RequestDataTooBig as exc:
        raise ApiError(413, "The request body is too large.") from exc
    except RecursionError as exc:  # the parser gives up on thousands of nested brackets
        raise too_deep from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ApiError(400, f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    if _depth(body) > MAX_JSON_DEPTH:
        raise too_deep
    return body


class InputMessage(BaseModel):
    """One message of a request; roles other than user and assistant are read and then ignored."""

    model_config = ConfigDict(strict=True)

    role: str
    # A string, or an array of content parts of which the text parts count (images are dropped).
    content: str | list[Any] | None = None

    def text(self) -> str:
        if not isinstance(self.content, list):
            return self.content or ""
        return "\n".join(
            part["text"]
            for part in self.content
            if isinstance(part, dict)
            and part.get("type") in {"text", "input_text"}
            and isinstance(part.get("text"), str)
        )


class CompletionRequest(BaseModel):
    """The fields of a chat completion request that Groundwork reads; the others are ignored.

    Strict, so that a JSON type never turns into another (`"stream": "yes"` is refused, not true).
    """

    model_config = ConfigDict(strict=True)

    # Validated in this order, which is the order the errors are reported in.
    model: str | None = None
    messages: list[InputMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: object = None

    @field_validator("stream", mode="before")
    @classmethod
    def _falsy_is_false(cls, value: object) -> object:
        return value or False  # null, 0 and "" have always meant "do not stream"

    @property
    def include_usage(self) -> bool:
        return isinstance(self.stream_options, dict) and self.stream_options.get("include_usage") is True


def _invalid(error: ErrorDetails) -> ApiError:
    """The OpenAI-style 400 for the first thing pydantic found wrong, naming the field."""
    match error["loc"]:
        case ("model", *_):
            return ApiError(400, "`model` must be a string.", param="model")
        case ("stream", *_):
            return ApiError(400, "`stream` must be true or false.", param="stream")
        case ("messages", int(index), "content", *_):
            return ApiError(
                400,
                f"messages[{index}].content must be a string or an array of content parts.",
                param=f"messages[{index}].content",
            )
        case ("messages", int(index), *_):
            return ApiError(
                400, f"messages[{index}] must be an object with a role.", param=f"messages[{index}]"
            )
        case ("messages", *_):
            return ApiError(400, "`messages` must be a non-empty array.", param="messages")
    return ApiError(400, "The request body must be a JSON object.")


def _completion_request(body: object) -> CompletionRequest:
    try:
        return CompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc.errors()[0]) from exc


def _asked(messages: list[InputMessage]) -> Asked:
    """The last user message is the question; each earlier user message answered by the
    assistant is one (question, answer) pair of history. Other roles are ignored."""
    turns = [(message.role, message.text()) for message in messages]
    last = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=None)
    if last is None:
        raise ApiError(400, "`messages` holds no user message to answer.", param="messages")
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for role, text in turns[:last]:
        if role == "user":
            pending = text
        elif role == "assistant" and pending is not None:
            history.append((pending, text))
            pending = None
    return Asked(question=turns[last][1], history=history)


def read_messages(messages: object) -> Asked:
    """`messages` as a request sends them (validated here) read as a question and its history."""
    return _asked(_completion_request({"messages": messages}).messages)


def _usage(answer: Answer) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        total_tokens=answer.prompt_tokens + answer.completion_tokens,
    )


def _dump(response: ChatCompletion) -> JsonObject:
    """The response as JSON: the fields set (so explicit nulls stay), and `groundwork` among them.

    The SDK's models allow extra fields, which is how `groundwork` rides along and how clients
    read it back (`completion.model_extra["groundwork"]`).
    """
    return response.model_dump(exclude_unset=True)


def chat_completion(answer: Answer, model: str) -> JsonObject:
    """A saved answer as an OpenAI `chat.completion`, with the `groundwork` field."""
    extra: JsonObject = {"groundwork": groundwork(answer)}
    completion = ChatCompletion(
        id=f"chatcmpl-{answer.pk}",
        object="chat.completion",
        created=int(answer.created_at.timestamp()),
        model=model,
        system_fingerprint=answer.system_fingerprint or None,
        choices=[
            Choice(
                index=0,
                message=ChatCompletionMessage(role="assistant", content=answer.text),
                logprobs=None,
                finish_reason="stop",
            )
        ],
        usage=_usage(answer),
        **extra,
    )
    return _dump(completion)


def groundwork(answer: Answer) -> JsonObject:
    """The `groundwork` extra field: the answer's summary and its guardrail verdicts."""
    return {**serializers.answer_summary(answer), "guardrails": answer.guardrails}


@api_view("POST")
def chat_completions(request: HttpRequest, user: User) -> HttpResponseBase:
    body = _completion_request(_json_body(request))
    assistant = _assistant_for(body.model)
    asked = _asked(body.messages)
    try:
        question = pipeline.validate_question(asked.question)
        usage.budget_check(user=user)
        if body.stream:
            return _stream_response(
                assistant=assistant,
                user=user,
                asked=Asked(question=question, history=asked.history),
                model=serializers.model_id(assistant),
                include_usage=body.include_usage,
            )
        answer = services.answer_for(user=user, question=question, assistant=assistant, history=asked.history)
    except pipeline.QuestionRejected as exc:
        raise ApiError(400, str(exc), param="messages", code="invalid_question") from exc
    except usage.BudgetExceeded as exc:
        raise ApiError(
            429, exc.message, error_type="insufficient_quota", code="budget_exceeded", retry=False
        ) from exc
    except provider.ProviderError as exc:
        logger.warning("API answer for user %s failed: %s", user.pk, exc)
        raise _provider_failure(exc) from exc
    return JsonResponse(chat_completion(answer, serializers.model_id(assistant)))


# --- streaming ----------------------------------------------------------------------------


@transaction.atomic
def _saved_events(*, assistant: Assistant, user: User, asked: Asked) -> Generator[pipeline.Event, None, None]:
    """The pipeline's events, with the answer saved before Done is passed on.

    A client that goes away mid-answer closes this generator, which closes the model's stream;
    nothing is saved then.
    """
    # Closing `tracked` closes answer_events (a generator), and so the model's stream.
    tracker = usage.Tracker(user=user, purpose=usage.Purpose.ANSWER)
    events = usage.tracked(
        tracker,
        pipeline.answer_events(
            assistant=assistant, user=user, question=asked.question, history=asked.history
        ),
    )
    with contextlib.closing(events):
        for event in events:
            if isinstance(event, pipeline.Done):
                services.answer_save(
                    answer=event.answer,
                    tracker=tracker,
                    query_vector=event.query_vector,
                    history=event.history,
                )
            yield event


def _until_text(events: Iterator[pipeline.Event]) -> list[pipeline.Event]:
    """Run the pipeline up to its first text, before any byte is sent.

    Retrieval and the connection to the model happen here, so their failures still get a real
    status code (502, 504) rather than an error event inside a 200 stream.
    """
    started: list[pipeline.Event] = []
    for event in events:
        if isinstance(event, pipeline.Stage | pipeline.EvidenceFound):
            continue  # the evidence reaches an API client in the final chunk's `groundwork`
        started.append(event)
        break
    return started


def remainder(streamed: str, final: str) -> str:
    """What to send after the streamed text so that the client ends with the saved answer.

    Usually nothing, or the rest of it (an abstention's text is never streamed). After a repair or
    a fallback the saved text differs from what was streamed; a stream cannot take text back, so
    the saved text follows after a blank line.
    """
    if final.startswith(streamed):
        return final[len(streamed) :]
    if streamed.strip() == final.strip():
        return ""
    return "\n\n" + final


def _sse(payload: JsonObject | str) -> str:
    return sse_event(payload if isinstance(payload, str) else json.dumps(payload))


@dataclass(frozen=True)
class ChunkWriter:
    """`chat.completion.chunk` events of one streamed completion, all with the same id."""

    model: str
    include_usage: bool
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _event(self, choices: list[ChunkChoice], **extra: Any) -> str:
        if self.include_usage:
            extra = {"usage": None, **extra}  # OpenAI sends `usage: null` on every chunk but the last
        chunk = ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            system_fingerprint=extra.pop("system_fingerprint", None),
            choices=choices,
            **extra,
        )
        # Straight to JSON by pydantic's serializer (one pass, not a dict and then json.dumps); the
        # same keys as `_dump`. Cost per chunk: docs/benchmarks-chat.md, section 4 (~10 µs).
        return _sse(chunk.model_dump_json(exclude_unset=True))

    def delta(self, delta: ChoiceDelta, finish_reason: Literal["stop"] | None = None, **extra: Any) -> str:
        choice = ChunkChoice(index=0, delta=delta, logprobs=None, finish_reason=finish_reason)
        return self._event([choice], **extra)

    def finish(self, answer: Answer, streamed: str) -> Iterator[str]:
        rest = remainder(streamed, answer.text)
        if rest:
            yield self.delta(ChoiceDelta(content=rest))
        fingerprint = answer.system_fingerprint or None
        summary = groundwork(answer)
        yield self.delta(ChoiceDelta(), "stop", system_fingerprint=fingerprint, groundwork=summary)
        if self.include_usage:  # as OpenAI does: one more chunk, without choices
            yield self._event([], system_fingerprint=fingerprint, usage=_usage(answer))


def _chunks(
    started: list[pipeline.Event],
    events: Generator[pipeline.Event, None, None],
    writer: ChunkWriter,
) -> Iterator[str]:
    """The answer as server-sent events. Closed early (the client left), it closes the pipeline."""
    with contextlib.closing(events):
        yield writer.delta(ChoiceDelta(role="assistant", content=""))
        streamed: list[str] = []
        try:
            for event in itertools.chain(started, events):
                if isinstance(event, pipeline.Delta):
                    streamed.append(event.text)
                    yield writer.delta(ChoiceDelta(content=event.text))
                elif isinstance(event, pipeline.Done):
                    yield from writer.finish(event.answer, "".join(streamed))
        except provider.ProviderError as exc:
            # Too late for a status code: an error event, which OpenAI's SDKs raise as APIError.
            logger.warning("API stream failed: %s", exc)
            yield _sse(_provider_failure(exc).body())
            return
        except Exception:
            logger.exception("API stream failed")
            failure = ApiError(500, "The answer failed; the error is logged.", error_type="server_error")
            yield _sse(failure.body())
            return
        yield _sse("[DONE]")


def _stream_response(
    *, assistant: Assistant, user: User, asked: Asked, model: str, include_usage: bool
) -> StreamingHttpResponse:
    events = _saved_events(assistant=assistant, user=user, asked=asked)
    started = _until_text(events)
    return sse_response(_chunks(started, events, ChunkWriter(model=model, include_usage=include_usage)))
