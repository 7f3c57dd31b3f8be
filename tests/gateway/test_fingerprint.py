"""A reply without `system_fingerprint` gets one derived from the server's model listing."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from openai.types import Model

from gateway import provider

# The real provider functions, taken before the autouse fixture replaces them with the fake.
REAL_CHAT = provider.chat
REAL_CHAT_STREAM = provider.chat_stream

MESSAGES = [{"role": "user", "content": "Name a colour."}]
LISTED = {
    "id": "served-model",
    "object": "model",
    "owned_by": "vllm",
    "root": "/models/x",
    "max_model_len": 8192,
}


class StandInClient:
    """The parts of the openai client the provider uses, answering without a fingerprint."""

    def __init__(
        self, *, fingerprint: str | None = None, entries: list[dict[str, Any]] | None = None
    ) -> None:
        self.base_url = "http://models.example:8000/v1/"
        self.fingerprint = fingerprint
        self.entries = [LISTED] if entries is None else entries
        self.listing_error: Exception | None = None
        self.listings = 0
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))
        self.models = SimpleNamespace(list=self.list)

    def with_options(self, **options: Any) -> StandInClient:
        return self

    def list(self) -> Any:
        self.listings += 1
        if self.listing_error is not None:
            raise self.listing_error
        return SimpleNamespace(data=[Model.construct(**entry) for entry in self.entries])

    def create(self, **request: Any) -> Any:
        if request.get("stream"):
            delta = SimpleNamespace(content="Blue.")
            chunk = SimpleNamespace(
                model="served-model",
                system_fingerprint=self.fingerprint,
                usage=None,
                choices=[SimpleNamespace(delta=delta, finish_reason="stop")],
            )
            return _Stream([chunk])
        message = SimpleNamespace(content="Blue.", tool_calls=None)
        return SimpleNamespace(
            model="served-model",
            system_fingerprint=self.fingerprint,
            usage=SimpleNamespace(prompt_tokens=5, completion_tokens=2, prompt_tokens_details=None),
            choices=[SimpleNamespace(message=message, finish_reason="stop")],
        )


class _Stream:
    def __init__(self, chunks: list[Any]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[Any]:
        return iter(self.chunks)

    def close(self) -> None:
        pass


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> StandInClient:
    stand_in = StandInClient()
    monkeypatch.setattr(provider, "chat_client", lambda: stand_in)
    monkeypatch.setattr(provider, "_derived_fingerprints", {})  # "once per process" starts afresh
    monkeypatch.setattr(provider, "_listeners", [])  # cost accounting is not what is tested here
    return stand_in


def stream_result() -> provider.ChatResult:
    events = list(REAL_CHAT_STREAM(MESSAGES))
    assert isinstance(events[-1], provider.ChatResult)
    return events[-1]


def test_a_fingerprint_the_server_sends_is_kept_and_the_listing_is_not_read(client: StandInClient) -> None:
    client.fingerprint = "fp_44709d6fcb"
    assert REAL_CHAT(MESSAGES).system_fingerprint == "fp_44709d6fcb"
    assert stream_result().system_fingerprint == "fp_44709d6fcb"
    assert client.listings == 0


def test_a_missing_fingerprint_is_derived_once_per_process_and_is_the_same_for_plain_and_stream(
    client: StandInClient,
) -> None:
    first = REAL_CHAT(MESSAGES).system_fingerprint
    assert first is not None and first.startswith("fp_derived_") and len(first) <= 100
    assert REAL_CHAT(MESSAGES).system_fingerprint == first
    assert stream_result().system_fingerprint == first
    assert client.listings == 1
    assert first == provider.fingerprint_derive(
        base_url="http://models.example:8000/v1", model="served-model", entry=LISTED
    )


def test_a_listing_that_cannot_be_read_gives_no_fingerprint_and_is_tried_again(client: StandInClient) -> None:
    request = SimpleNamespace(method="GET", url="http://models.example:8000/v1/models", headers={})
    client.listing_error = openai.APIConnectionError(request=request)  # type: ignore[arg-type]
    result = REAL_CHAT(MESSAGES)
    assert result.content == "Blue." and result.system_fingerprint is None
    client.listing_error = None
    assert (REAL_CHAT(MESSAGES).system_fingerprint or "").startswith("fp_derived_")
    assert client.listings == 2


def test_a_model_the_listing_does_not_name_still_gets_a_fingerprint(client: StandInClient) -> None:
    client.entries = [{**LISTED, "id": "another-model"}]
    assert REAL_CHAT(MESSAGES).system_fingerprint == provider.fingerprint_derive(
        base_url="http://models.example:8000/v1", model="served-model", entry=None
    )


def test_the_derived_fingerprint_follows_the_server_the_model_and_what_the_listing_says() -> None:
    def derive(base_url: str = "http://h/v1", model: str = "m", **entry: Any) -> str:
        return provider.fingerprint_derive(base_url=base_url, model=model, entry={**LISTED, **entry})

    same = derive()
    assert derive() == same
    assert derive(base_url="http://h/v1/") == same  # the SDK's trailing slash
    # Fields servers fill in per request are not the model's configuration.
    assert derive(created=1_700_000_000) == derive(created=1_800_000_000) == same
    assert derive(permission=[{"id": "modelperm-1"}]) == same
    # Anything else the listing exposes is.
    assert derive(max_model_len=4096) != same
    assert derive(root="/models/y") != same
    assert derive(meta={"n_ctx_train": 8192, "size": 1}) != derive(meta={"n_ctx_train": 8192, "size": 2})
    assert derive(base_url="http://other/v1") != same
    assert derive(model="m2") != same
