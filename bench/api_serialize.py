"""What the API's own code costs per request, without the model: parsing, the completion, the stream.

    python bench/api_serialize.py [--rounds 2000] [--chunks 200] [--out FILE]

Times, in this process and on an answer held in memory (no database, no model), the three pieces
of `assistant/api.py` that turn a request into bytes: `read_messages` on a ten-message
conversation, `chat_completion` on a saved answer with three citations serialised as
`JsonResponse` does, and `_chunks` writing a streamed answer of `--chunks` deltas plus the final
chunk as server-sent events. Uses only names both the hand-built-dict version and the
openai-types version of the module have, so the same script measures either commit.

`bench/api_load.py` measures the whole path with the real model; on a busy machine the model's
queue hides anything the web tier does, which is why this one exists.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, environment, log, percentile, setup_django  # noqa: E402


def _answer() -> Any:
    from assistant.models import Answer, PromptTemplate

    citations = [
        {
            "n": n,
            "chunk_id": 100 + n,
            "document_id": 7,
            "title": "Travel policy",
            "filename": "travel-policy.md",
            "page": None,
            "heading": "Per diem",
            "quote": "Meals are reimbursed up to the daily allowance for the city visited.",
        }
        for n in (1, 2, 3)
    ]
    answer = Answer(
        pk=4242,
        question="What is the per diem for meals?",
        text="Meals are reimbursed up to the daily allowance [1]. " * 6,
        model="smollm2",
        prompt_tokens=900,
        completion_tokens=120,
        citations=citations,
        latency_ms={"total": 1234.5},
        guardrails={"input_action": "allow", "input": [], "output": []},
        system_fingerprint="fp_derived_0123456789abcdef",
    )
    answer.prompt = PromptTemplate(version=3)
    answer.created_at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return answer


def _summary(seconds: list[float]) -> dict[str, float]:
    us = [s * 1e6 for s in seconds]
    return {
        "n": len(us),
        # The least of many runs: on a shared machine the other figures carry the neighbours' load.
        "min_us": round(min(us), 1),
        "p50_us": round(percentile(us, 50), 1),
        "p95_us": round(percentile(us, 95), 1),
        "mean_us": round(sum(us) / len(us), 1),
    }


def _time(rounds: int, work: Any) -> list[float]:
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--out")
    args = parser.parse_args()
    setup_django()

    from django.core.serializers.json import DjangoJSONEncoder

    from assistant import api, pipeline

    answer = _answer()
    messages = [
        {"role": "system", "content": "Be brief."},
        *[
            {"role": role, "content": f"{role} turn {i}: " + "words " * 20}
            for i in range(4)
            for role in ("user", "assistant")
        ],
        {"role": "user", "content": [{"type": "text", "text": "And the per diem for meals?"}]},
    ]
    pieces = [f"word{i} " for i in range(args.chunks)]

    def parse() -> None:
        api.read_messages(json.loads(json.dumps(messages)))

    def completion() -> None:
        json.dumps(api.chat_completion(answer, "groundwork"), cls=DjangoJSONEncoder).encode()

    def events() -> Iterator[pipeline.Event]:
        yield from (pipeline.Delta(p) for p in pieces)
        yield pipeline.Done(answer=answer)

    def stream() -> None:
        writer = api.ChunkWriter(model="groundwork", include_usage=True)
        for event in api._chunks([], events(), writer):  # type: ignore[arg-type]
            if isinstance(event, str):  # what Django does to each piece of a streamed response
                event.encode()

    results: dict[str, Any] = {}
    for name, work, rounds in (
        ("read_messages", parse, args.rounds),
        ("chat_completion", completion, args.rounds),
        ("stream", stream, max(1, args.rounds // 10)),
    ):
        _time(min(50, rounds), work)  # warm-up
        summary = _summary(_time(rounds, work))
        log(f"{name}: min {summary['min_us']} µs, p50 {summary['p50_us']} µs")
        results[name] = summary
    per_chunk_us = results["stream"]["min_us"] / (args.chunks + 3)
    emit(
        {
            "benchmark": "api_serialize",
            "rounds": args.rounds,
            "stream_chunks": args.chunks,
            "results_us": results,
            "stream_per_chunk_us_min": round(per_chunk_us, 1),
            "environment": environment(),
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
