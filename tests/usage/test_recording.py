"""Every model call is recorded: the provider's listeners, purposes, users, streams, errors."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from django.conf import settings

from gateway import provider
from tests.fakes import FakeProvider
from usage import services
from usage.models import ModelCall

# The real provider functions, taken before the autouse fixture replaces them with the fake.
REAL_CHAT = provider.chat
REAL_CHAT_STREAM = provider.chat_stream
REAL_EMBED = provider.embed

MESSAGES = [{"role": "system", "content": "You answer."}, {"role": "user", "content": "x" * 400}]


# --- the provider's own listener mechanism (real functions, a stand-in SDK client) ----------


class FakeCompletions:
    def __init__(self, response: Any = None, chunks: list[Any] | None = None, error: Exception | None = None):
        self.response, self.chunks, self.error = response, chunks or [], error
        self.requests: list[dict[str, Any]] = []

    def create(self, **request: Any) -> Any:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        if request.get("stream"):
            return FakeStream(self.chunks)
        return self.response


class FakeStream:
    def __init__(self, chunks: list[Any]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed = True


def chunk(text: str | None, finish: str | None = None, usage: Any = None) -> Any:
    delta = SimpleNamespace(content=text)
    return SimpleNamespace(
        model="served-name",
        system_fingerprint=None,
        usage=usage,
        choices=[SimpleNamespace(delta=delta, finish_reason=finish)],
    )


@pytest.fixture
def heard() -> Iterator[list[provider.CallRecord]]:
    records: list[provider.CallRecord] = []
    provider.add_listener(records.append)
    yield records
    provider.remove_listener(records.append)


def use_client(monkeypatch: pytest.MonkeyPatch, completions: FakeCompletions, embeddings: Any = None) -> None:
    client = SimpleNamespace(
        chat=SimpleNamespace(completions=completions),
        embeddings=embeddings,
        # The model listing a reply without system_fingerprint is fingerprinted from.
        base_url="http://stand-in/v1/",
        models=SimpleNamespace(list=lambda: SimpleNamespace(data=[])),
    )
    client.with_options = lambda **options: client
    monkeypatch.setattr(provider, "chat_client", lambda: client)
    monkeypatch.setattr(provider, "embeddings_client", lambda: client)


def test_a_chat_call_is_heard_with_its_usage_and_purpose(
    monkeypatch: pytest.MonkeyPatch, heard: list[provider.CallRecord]
) -> None:
    usage = SimpleNamespace(prompt_tokens=120, completion_tokens=30, prompt_tokens_details=None)
    message = SimpleNamespace(content="hi", tool_calls=None)
    response = SimpleNamespace(
        model="m", usage=usage, choices=[SimpleNamespace(message=message, finish_reason="stop")]
    )
    use_client(monkeypatch, FakeCompletions(response=response))

    with provider.purpose("repair"):
        REAL_CHAT(MESSAGES)
    REAL_CHAT(MESSAGES)

    assert [(r.kind, r.purpose, r.ok) for r in heard] == [("chat", "repair", True), ("chat", None, True)]
    assert heard[0].usage == provider.Usage(120, 30, 0)
    assert heard[0].model == settings.CHAT_MODEL  # the model asked for, which is what is priced


def test_a_failed_chat_call_is_heard_as_an_error(
    monkeypatch: pytest.MonkeyPatch, heard: list[provider.CallRecord]
) -> None:
    request = SimpleNamespace(method="POST", url="http://x", headers={})
    use_client(monkeypatch, FakeCompletions(error=openai.APITimeoutError(request=request)))  # type: ignore[arg-type]

    with pytest.raises(provider.ProviderError):
        REAL_CHAT(MESSAGES)

    [record] = heard
    assert (record.ok, record.error_kind) == (False, "timeout")
    assert "did not answer in time" in record.error


def test_a_stream_without_usage_asks_for_it_and_estimates_it(
    monkeypatch: pytest.MonkeyPatch, heard: list[provider.CallRecord]
) -> None:
    completions = FakeCompletions(chunks=[chunk("Hel"), chunk("lo"), chunk(None, "stop")])
    use_client(monkeypatch, completions)

    events = list(REAL_CHAT_STREAM(MESSAGES))

    assert completions.requests[0]["stream_options"] == {"include_usage": True}
    result = events[-1]
    assert isinstance(result, provider.ChatResult)
    assert result.usage.completion_tokens == 2  # one token a chunk
    assert result.usage.prompt_tokens >= 100  # 400 characters of prompt, about 4 a token
    assert result.usage.estimated is True
    [record] = heard
    assert (record.kind, record.usage) == ("chat_stream", result.usage)


def test_a_stream_with_usage_is_not_estimated(
    monkeypatch: pytest.MonkeyPatch, heard: list[provider.CallRecord]
) -> None:
    usage = SimpleNamespace(prompt_tokens=77, completion_tokens=2, prompt_tokens_details=None)
    chunks = [chunk("Hi"), chunk(None, "stop"), chunk(None, usage=usage)]
    use_client(monkeypatch, FakeCompletions(chunks=chunks))

    list(REAL_CHAT_STREAM(MESSAGES))

    assert heard[0].usage == provider.Usage(77, 2, 0, False)


def test_a_stream_closed_early_is_still_heard(
    monkeypatch: pytest.MonkeyPatch, heard: list[provider.CallRecord]
) -> None:
    use_client(monkeypatch, FakeCompletions(chunks=[chunk("a"), chunk("b"), chunk("c"), chunk(None, "stop")]))

    stream = REAL_CHAT_STREAM(MESSAGES)
    next(stream)
    stream.close()  # the user pressed stop

    [record] = heard
    assert record.ok and record.usage.completion_tokens == 1


def test_an_embedding_call_is_heard_and_the_purpose_is_the_one_in_force(
    monkeypatch: pytest.MonkeyPatch, heard: list[provider.CallRecord]
) -> None:
    vector = [0.0] * settings.EMBEDDING_DIMENSIONS

    def create(**request: Any) -> Any:
        rows = [SimpleNamespace(index=i, embedding=vector) for i, _ in enumerate(request["input"])]
        return SimpleNamespace(data=rows, usage=SimpleNamespace(prompt_tokens=9))

    use_client(monkeypatch, FakeCompletions(), embeddings=SimpleNamespace(create=create))

    with provider.purpose("guardrail"):
        REAL_EMBED(["one", "two"], kind="query")

    [record] = heard
    assert (record.kind, record.purpose, record.usage.prompt_tokens) == ("embed", "guardrail", 9)


def test_embeddings_are_asked_for_as_base64_and_read_in_either_form(monkeypatch: pytest.MonkeyPatch) -> None:
    import array
    import base64

    dims = settings.EMBEDDING_DIMENSIONS
    first = [0.5, -0.25] + [0.0] * (dims - 2)
    packed = base64.b64encode(array.array("f", first).tobytes()).decode("ascii")
    requests: list[dict[str, Any]] = []

    def create(**request: Any) -> Any:
        requests.append(request)
        # A server may ignore the encoding it was asked for and send the numbers.
        rows = [SimpleNamespace(index=0, embedding=packed), SimpleNamespace(index=1, embedding=[1.0] * dims)]
        return SimpleNamespace(data=rows, usage=SimpleNamespace(prompt_tokens=2))

    use_client(monkeypatch, FakeCompletions(), embeddings=SimpleNamespace(create=create))

    vectors = REAL_EMBED(["one", "two"], kind="query").vectors

    assert requests[0]["encoding_format"] == "base64"
    assert vectors == [first, [1.0] * dims]


def test_a_failing_listener_does_not_break_the_call(
    monkeypatch: pytest.MonkeyPatch, heard: list[provider.CallRecord]
) -> None:
    def broken(record: provider.CallRecord) -> None:
        raise RuntimeError("listener bug")

    provider.add_listener(broken)
    try:
        use_client(monkeypatch, FakeCompletions(chunks=[chunk("ok"), chunk(None, "stop")]))
        events = list(REAL_CHAT_STREAM(MESSAGES))
    finally:
        provider.remove_listener(broken)

    assert isinstance(events[-1], provider.ChatResult) and len(heard) == 1


# --- recorded as ModelCall rows (the usage app's listener, through the fake provider) -------


@pytest.mark.django_db
def test_calls_are_recorded_with_the_tracked_user_and_purpose(member: Any) -> None:
    with services.tracking(user=member, purpose="answer") as tracker:
        provider.chat(MESSAGES)
        with provider.purpose("repair"):
            provider.chat(MESSAGES)
        provider.embed(["a question"], kind="query")
    provider.chat(MESSAGES)  # outside: nobody's

    calls = list(ModelCall.objects.order_by("pk"))
    assert [(c.kind, c.purpose, c.user_id) for c in calls] == [
        ("chat", "answer", member.pk),
        ("chat", "repair", member.pk),
        ("embed", "embedding", member.pk),
        ("chat", "other", None),
    ]
    assert tracker.call_ids == [c.pk for c in calls[:3]]
    assert tracker.prompt_tokens == sum(c.prompt_tokens for c in calls[:3]) > 0
    assert tracker.cost_usd == 0  # the local models are free


@pytest.mark.django_db
def test_a_stream_is_recorded_when_it_ends_with_the_tracker_of_its_steps(member: Any) -> None:
    tracker = services.Tracker(user=member, purpose="eval")
    stream = services.tracked(tracker, provider.chat_stream(MESSAGES))

    next(stream)
    assert services.current_tracker() is None  # nothing stays tagged while the stream waits
    assert not ModelCall.objects.exists()
    list(stream)

    call = ModelCall.objects.get()
    assert (call.kind, call.purpose, call.user_id) == ("chat_stream", "eval", member.pk)
    assert call.completion_tokens > 0 and tracker.call_ids == [call.pk]


@pytest.mark.django_db
def test_a_failed_call_is_recorded_as_an_error(fake_provider: FakeProvider) -> None:
    fake_provider.replies = [provider.ProviderError("down", kind=provider.ErrorKind.UNAVAILABLE)]

    with pytest.raises(provider.ProviderError):
        provider.chat(MESSAGES)

    call = ModelCall.objects.get()
    assert (call.ok, call.error, call.prompt_tokens) == (False, "down", 0)


# --- a call record in a transaction of its own does not wait for the disk -------------------


def _synchronous_commit() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_a_record_of_its_own_commits_without_waiting_and_the_setting_does_not_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    record = provider.CallRecord(
        kind="embed", model=settings.EMBEDDING_MODEL, purpose=None, usage=provider.Usage(5), latency_ms=1.0
    )
    with CaptureQueriesContext(connection) as queries:
        call = services.call_record(record)

    assert call is not None and ModelCall.objects.filter(pk=call.pk).exists()  # committed
    assert any("synchronous_commit TO OFF" in q["sql"] for q in queries.captured_queries)
    assert _synchronous_commit() == "on"  # SET LOCAL: this connection's next transactions wait again


@pytest.mark.django_db
def test_a_record_inside_a_callers_transaction_leaves_its_commit_alone() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    record = provider.CallRecord(
        kind="embed", model=settings.EMBEDDING_MODEL, purpose=None, usage=provider.Usage(5), latency_ms=1.0
    )
    with CaptureQueriesContext(connection) as queries:
        assert services.call_record(record) is not None

    assert not any("synchronous_commit" in q["sql"] for q in queries.captured_queries)
    assert _synchronous_commit() == "on"
