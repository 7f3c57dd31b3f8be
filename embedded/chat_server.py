"""llama-cpp-python's OpenAI-compatible chat server, made to repeat itself and to say what it runs.

    python embedded/chat_server.py [--run_dir DIR] --model FILE ...   # llama_cpp.server's options

The server is llama-cpp-python's own (`python -m llama_cpp.server`), with methods of its `Llama`
wrapped before it starts (`install`):

- Every request evaluates its prompt from the start. By default `Llama.generate` keeps the KV
  cache of the previous request and evaluates only what differs: the same prompt again is
  evaluated as its last token alone (a batch of one), where the first time it went through in
  batches of `n_batch`. The floating-point sums differ between those two paths, so the logits
  differ slightly and a sampled answer (same seed, same temperature) comes out different on the
  first call after a start than on every later one. Evaluated from the start, a prompt always
  takes the same path: same messages, model and seed give the same bytes, restart or not. The
  price is re-evaluating a prefix the cache held (bench/chat_repeat.py measures it).
- Every chat completion, streamed or not, carries `system_fingerprint`: `fp_local_` and a hash
  of what determines the output (the model file's sha256, llama-cpp-python's version, the
  context settings, the CPU features llama.cpp uses, and `DETERMINISM` below). The server sends
  None otherwise, and a replay could not tell a changed configuration from chance. The
  description behind the hash is written to `DIR/chat-fingerprint.json` when `--run_dir` is
  given, and the model file's sha256 is cached there (`model-digests.json`, keyed by path, size
  and modification time), so a restart does not read the 100 MB again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Bump when the wrapping below changes what a request computes: the fingerprint changes with it.
DETERMINISM = "prompt-from-start-1"
FINGERPRINT_FILE = "chat-fingerprint.json"
DIGEST_CACHE_FILE = "model-digests.json"


def file_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """The sha256 of `path`, read from `cache_dir`'s cache while the file's size and mtime match."""
    path = path.resolve()
    stat = path.stat()
    key = str(path)
    cache_file = cache_dir / DIGEST_CACHE_FILE if cache_dir is not None else None
    cache: dict[str, Any] = {}
    if cache_file is not None:
        try:
            loaded = json.loads(cache_file.read_text())
            cache = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            cache = {}
        entry = cache.get(key)
        if (
            isinstance(entry, dict)
            and entry.get("size") == stat.st_size
            and entry.get("mtime_ns") == stat.st_mtime_ns
            and isinstance(entry.get("sha256"), str)
        ):
            return str(entry["sha256"])
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(functools.partial(handle.read, 1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    if cache_file is not None:
        cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
        write_json(cache_file, cache)
    return value


def write_json(path: Path, value: object) -> None:
    """Replace `path` whole, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


def fingerprint(determines: dict[str, Any]) -> str:
    """`fp_local_` and 16 hex digits of the description's canonical JSON."""
    canonical = json.dumps(determines, sort_keys=True, separators=(",", ":"))
    return "fp_local_" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def describe(llama: Any, cache_dir: Path | None) -> dict[str, Any]:
    """What determines this loaded model's output, read from the `Llama` instance itself."""
    import llama_cpp

    params = llama.context_params
    return {
        "server": "llama-cpp-python",
        "llama_cpp_python": llama_cpp.__version__,
        "model_sha256": file_sha256(Path(llama.model_path), cache_dir),
        "n_ctx": int(params.n_ctx),
        "n_batch": int(llama.n_batch),
        "n_ubatch": int(params.n_ubatch),
        "type_k": int(params.type_k),
        "type_v": int(params.type_v),
        "flash_attn_type": int(getattr(params, "flash_attn_type", -1)),
        "chat_format": str(llama.chat_format),
        # The kernels llama.cpp picks (AVX2, AVX-512, ...) round differently.
        "cpu": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "determinism": DETERMINISM,
    }


def evaluate_from_start(generate: Callable[..., Iterator[int]]) -> Callable[..., Iterator[int]]:
    """`Llama.generate`, forgetting the previous request's KV cache first.

    With `n_tokens` at 0 the original finds no prefix to reuse, resets, and its first `eval`
    removes every cached position from 0 on, as on the first request after a start.
    """

    @functools.wraps(generate)
    def wrapper(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
        self.n_tokens = 0
        return generate(self, tokens, *args, **kwargs)

    return wrapper


def _stamped(chunks: Iterator[dict[str, Any]], value: str) -> Iterator[dict[str, Any]]:
    for chunk in chunks:
        chunk["system_fingerprint"] = value
        yield chunk


def with_fingerprint(create: Callable[..., Any]) -> Callable[..., Any]:
    """`Llama.create_chat_completion`, its reply (or each streamed chunk) carrying the fingerprint."""

    @functools.wraps(create)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = create(self, *args, **kwargs)
        value = getattr(self, "groundwork_fingerprint", None)
        if value is None:
            return result
        if isinstance(result, dict):
            result["system_fingerprint"] = value
            return result
        return _stamped(result, value)

    return wrapper


def fingerprinting_init(init: Callable[..., None], cache_dir: Path | None) -> Callable[..., None]:
    """`Llama.__init__`, then the fingerprint of what was loaded (and its description on disk)."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        determines = describe(self, cache_dir)
        self.groundwork_fingerprint = fingerprint(determines)
        if cache_dir is not None:
            write_json(
                cache_dir / FINGERPRINT_FILE,
                {
                    "system_fingerprint": self.groundwork_fingerprint,
                    "model_path": str(Path(self.model_path).resolve()),
                    "determines": determines,
                },
            )

    return wrapper


def chat_completion_type(llama_types: Any) -> Any:
    """llama-cpp-python's chat completion reply type, with `system_fingerprint` added.

    Built from the original's resolved fields: a subclass would leave its forward references to
    be resolved in this module, where pydantic cannot find them.
    """
    from typing import NotRequired, get_type_hints

    # pydantic needs typing_extensions' TypedDict before Python 3.12.
    from typing_extensions import TypedDict

    original = llama_types.CreateChatCompletionResponse
    fields = get_type_hints(original, include_extras=True)
    return TypedDict(  # type: ignore[operator]
        original.__name__, {**fields, "system_fingerprint": NotRequired[str]}
    )


def install(cache_dir: Path | None) -> None:
    """Wrap llama-cpp-python's `Llama` as the module docstring says; once per process."""
    import llama_cpp

    llama: Any = llama_cpp.Llama
    if getattr(llama, "groundwork_installed", False):
        return
    if "llama_cpp.server.app" in sys.modules:
        raise RuntimeError("install() must run before llama_cpp.server.app is imported")
    # The server validates a plain reply against this type when its route is declared, which
    # drops keys it does not name: declare the fingerprint (streamed chunks are not validated).
    llama_cpp.ChatCompletion = chat_completion_type(llama_cpp.llama_types)
    llama.generate = evaluate_from_start(llama.generate)
    llama.create_chat_completion = with_fingerprint(llama.create_chat_completion)
    llama.__init__ = fingerprinting_init(llama.__init__, cache_dir)
    llama.groundwork_installed = True


def split_run_dir(argv: list[str]) -> tuple[Path | None, list[str]]:
    """Our one option, `--run_dir DIR`, taken out of the arguments llama_cpp.server parses."""
    rest: list[str] = []
    run_dir: Path | None = None
    args = iter(argv)
    for arg in args:
        if arg == "--run_dir":
            value = next(args, None)
            if value is None:
                raise SystemExit("--run_dir needs a folder")
            run_dir = Path(value)
        elif arg.startswith("--run_dir="):
            run_dir = Path(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return run_dir, rest


def main() -> None:
    run_dir, rest = split_run_dir(sys.argv[1:])
    sys.argv = [sys.argv[0], *rest]
    install(run_dir)
    from llama_cpp.server.__main__ import main as serve

    serve()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
