"""Fresh local chat servers, started by the test: seeded answers repeat and carry a fingerprint."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from config.runtime import runtime
from embedded.services import ChatModel
from gateway import provider

pytestmark = pytest.mark.e2e

# Sampled, not greedy, so a tiny difference in the logits shows in the text: with llama.cpp's
# prompt cache reused, this request's first and second answers differed from the first word.
MESSAGES = [{"role": "user", "content": "Name a colour."}]
PARAMS = provider.ChatParams(seed=1234, temperature=0.8, top_p=0.95, max_tokens=16)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fresh_server(tmp_path: Path, settings: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Start a chat server of our own (the launcher's command) on a free port; stop it after.

    One at a time: servers of one data folder share a pid file.
    """
    started: list[ChatModel] = []
    monkeypatch.setattr(provider, "_listeners", [])  # no database here to account the calls in

    def start(*, context: str | None = None) -> ChatModel:
        port = free_port()
        server = ChatModel("chat", port, "OPENAI_BASE_URL", replace(runtime(), data_dir=tmp_path), 120)
        with pytest.MonkeyPatch.context() as env:
            if context is not None:
                env.setenv("CHAT_CONTEXT", context)
            server.spawn()
        started.append(server)
        server.wait_ready()
        settings.OPENAI_BASE_URL = f"http://127.0.0.1:{port}/v1"  # type: ignore[attr-defined]
        return server

    yield start
    for server in started:
        server.stop()


def texts_and_fingerprints(params: provider.ChatParams = PARAMS) -> list[tuple[str, str | None]]:
    """The same request plain, then streamed: the second finds the first's prompt in the cache."""
    plain = provider.chat(MESSAGES, params=params)
    events = list(provider.chat_stream(MESSAGES, params=params))
    streamed = events[-1]
    assert isinstance(streamed, provider.ChatResult)
    return [(r.content, r.system_fingerprint) for r in (plain, streamed)]


def test_a_seeded_sampled_answer_is_the_same_bytes_on_every_call_and_after_every_restart(
    fresh_server: object,
) -> None:
    runs = []
    for _ in range(3):
        server = fresh_server()  # type: ignore[operator]
        runs.append(texts_and_fingerprints())
        server.stop()
    replies = [reply for run in runs for reply in run]
    assert replies[0][0], "the model wrote nothing"
    assert {text for text, _ in replies} == {replies[0][0]}, runs
    fingerprints = {fp for _, fp in replies}
    assert len(fingerprints) == 1 and (fingerprints.pop() or "").startswith("fp_local_")


def test_the_fingerprint_is_stable_and_changes_with_the_context_setting(
    fresh_server: object, tmp_path: Path
) -> None:
    one_token = replace(PARAMS, max_tokens=1)
    server = fresh_server(context="2048")  # type: ignore[operator]
    small = {fp for _, fp in texts_and_fingerprints(one_token)}
    described = (tmp_path / "run" / "chat-fingerprint.json").read_text()
    server.stop()
    fresh_server(context="4096")  # type: ignore[operator]
    large = {fp for _, fp in texts_and_fingerprints(one_token)}
    assert len(small) == 1 and len(large) == 1
    assert small != large
    assert all((fp or "").startswith("fp_local_") for fp in small | large)
    assert f'"system_fingerprint": "{small.pop()}"' in described and '"n_ctx": 2048' in described
