"""The embedded chat server's wrapping: prompts evaluated from the start, a fingerprint on replies."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from config.runtime import runtime
from embedded import chat_server
from embedded.services import ChatModel

DETERMINES: dict[str, Any] = {
    "server": "llama-cpp-python",
    "llama_cpp_python": "0.3.36",
    "model_sha256": "ab" * 32,
    "n_ctx": 8192,
    "n_batch": 512,
    "n_ubatch": 512,
    "type_k": 1,
    "type_v": 1,
    "flash_attn_type": 0,
    "chat_format": "chat_template.default",
    "cpu": "AVX2 = 1",
    "determinism": chat_server.DETERMINISM,
}


def test_the_chat_server_is_our_script_with_the_run_dir_then_llama_cpps_options(tmp_path: Path) -> None:
    rt = replace(runtime(), data_dir=tmp_path)
    command = ChatModel("chat", 8001, "OPENAI_BASE_URL", rt).command()
    assert command[0] == sys.executable
    assert command[1].endswith("embedded/chat_server.py")
    assert command[2:4] == ["--run_dir", str(tmp_path / "run")]
    assert command[4:6] == ["--model", str(Path(command[5]))] and command[5].endswith(".gguf")
    assert chat_server.split_run_dir(command[2:]) == (tmp_path / "run", command[4:])
    assert chat_server.split_run_dir(["--run_dir=/x", "--port", "1"]) == (Path("/x"), ["--port", "1"])


def test_the_model_hash_is_computed_once_and_again_when_the_file_changes(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"weights" * 1000)
    expected = hashlib.sha256(model.read_bytes()).hexdigest()
    assert chat_server.file_sha256(model, tmp_path) == expected
    cache = tmp_path / chat_server.DIGEST_CACHE_FILE
    # While size and modification time match, the cache answers and the file is not read.
    cache.write_text(cache.read_text().replace(expected, "c" * 64))
    assert chat_server.file_sha256(model, tmp_path) == "c" * 64
    model.write_bytes(b"other weights" * 1000)
    assert chat_server.file_sha256(model, tmp_path) == hashlib.sha256(model.read_bytes()).hexdigest()
    # Without a run dir nothing is cached, and a broken cache file is read past.
    cache.write_text("{not json")
    assert chat_server.file_sha256(model, None) == hashlib.sha256(model.read_bytes()).hexdigest()
    assert chat_server.file_sha256(model, tmp_path) == hashlib.sha256(model.read_bytes()).hexdigest()


def test_the_fingerprint_is_stable_and_changes_with_anything_that_determines_output() -> None:
    value = chat_server.fingerprint(DETERMINES)
    assert value.startswith("fp_local_") and len(value) == len("fp_local_") + 16
    assert chat_server.fingerprint(dict(reversed(DETERMINES.items()))) == value
    for key, other in [("n_ctx", 4096), ("n_batch", 256), ("model_sha256", "cd" * 32), ("determinism", "x")]:
        assert chat_server.fingerprint({**DETERMINES, key: other}) != value, key


class StubLlama:
    """Stands in for llama_cpp.Llama: n_tokens is what the previous request left cached."""

    def __init__(self) -> None:
        self.n_tokens = 57
        self.seen: list[int] = []
        self.groundwork_fingerprint = "fp_local_0123456789abcdef"

    def generate(self, tokens: list[int], **kwargs: Any) -> Iterator[int]:
        self.seen.append(self.n_tokens)
        yield from tokens

    def create_chat_completion(self, stream: bool = False) -> Any:
        if stream:
            return iter([{"choices": []}, {"choices": []}])
        return {"choices": []}


def test_every_request_starts_from_an_empty_cache() -> None:
    generate = chat_server.evaluate_from_start(StubLlama.generate)
    llama = StubLlama()
    assert list(generate(llama, [1, 2, 3], temp=0.8)) == [1, 2, 3]
    assert llama.seen == [0]


def test_plain_and_streamed_replies_carry_the_fingerprint() -> None:
    create = chat_server.with_fingerprint(StubLlama.create_chat_completion)
    llama = StubLlama()
    assert create(llama)["system_fingerprint"] == "fp_local_0123456789abcdef"
    chunks = list(create(llama, stream=True))
    assert [c["system_fingerprint"] for c in chunks] == ["fp_local_0123456789abcdef"] * 2


def test_the_reply_type_keeps_the_fingerprint_the_server_would_otherwise_drop() -> None:
    import llama_cpp.llama_types as llama_types

    reply = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Blue."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        "system_fingerprint": "fp_local_0123456789abcdef",
    }
    stock = TypeAdapter(llama_types.CreateChatCompletionResponse).validate_python(reply)
    assert "system_fingerprint" not in stock  # why the type is replaced
    ours = TypeAdapter(chat_server.chat_completion_type(llama_types)).validate_python(reply)
    assert ours == reply


def test_the_description_is_written_whole(tmp_path: Path) -> None:
    target = tmp_path / "run" / chat_server.FINGERPRINT_FILE
    chat_server.write_json(target, {"b": 1, "a": 2})
    assert target.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert os.listdir(target.parent) == [target.name]
