"""Time to first streamed token with the real local chat model, through the app and raw.

    python bench/ttft.py [--questions 10] [--out FILE]

Ingests one small Markdown document in-process (document_upload + document_ingest, real
embeddings) into the collection `bench-ttft`, points the default assistant at it with
min_similarity 0 so every question reaches the model, then for each question measures:

- app: from calling `services.answer_stream` (after `message_send`) to its first
  `pipeline.Delta`, i.e. claim + history + retrieval (a real embedding call) + prompt building +
  the model's first tokens + the few tokens of `{"answer": "` before the answer text starts;
- app_model: inside that same turn, from the pipeline's `provider.chat_stream` call to its first
  `StreamDelta` (the model's share of the app figure);
- raw: `provider.chat_stream` alone, with the exact messages and settings the pipeline sent, to
  its first `StreamDelta`; the stream is closed there (which stops generation).

Each turn is stopped at its first Delta, as the stop button does (the message ends "stopped" and
the closed HTTP stream stops generation): under load the local model writes about a token a
second, and a whole answer would take minutes without changing the first-token figure.

The order of app and raw alternates between questions: stock llama.cpp reuses the cached prompt
prefix of the previous request and whichever goes second gains from it. The embedded server
(embedded/chat_server.py) evaluates every prompt from the start, so there it no longer matters.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    bench_superuser,
    collection_reset,
    emit,
    environment,
    latency_summary,
    log,
    setup_django,
)

COLLECTION = "bench-ttft"

DOCUMENT = """# Travel and expenses policy

## Booking travel

Book flights and trains through the travel desk at least 14 days before departure. Economy class
is the default; business class is allowed for flights longer than 8 hours. Hotels are booked up
to 180 euros a night in capital cities and 130 euros elsewhere.

## Expense claims

Submit expense claims within 30 days of the trip, with a receipt for every item above 25 euros.
Meals are reimbursed up to 60 euros a day. Claims are approved by your manager and paid with the
next monthly salary.

## Remote work equipment

Each employee may claim up to 500 euros every three years for a desk chair, a monitor or a
keyboard for working from home. Laptops are provided by IT and are not claimed as expenses.
"""

QUESTIONS = [
    "How far in advance must flights be booked?",
    "When is business class allowed?",
    "What is the hotel limit in capital cities?",
    "How long do I have to submit an expense claim?",
    "Which items need a receipt?",
    "What is the daily meal allowance?",
    "Who approves expense claims?",
    "When are expense claims paid?",
    "How much can I claim for home office equipment?",
    "Can I claim a laptop as an expense?",
    "What is the hotel limit outside capital cities?",
    "Which class is the default for flights?",
]


def ingest_document() -> Any:
    from django.core.files.base import ContentFile

    from knowledge import services
    from knowledge.models import Document

    collection = collection_reset(COLLECTION)
    upload = ContentFile(DOCUMENT.encode(), name="travel-policy.md")
    outcome = services.document_upload(
        collection=collection, file=upload, filename="travel-policy.md", title="Travel policy", enqueue=False
    )
    services.document_ingest(document_id=outcome.document.pk)
    document = Document.objects.get(pk=outcome.document.pk)
    if document.status != Document.Status.READY:
        raise SystemExit(f"ingest failed: {document.status} {document.error}")
    log(f"ingested {document.filename}: {document.chunk_count} chunks")
    return collection


def first_delta_seconds(stream: Iterator[Any], started: float) -> float | None:
    """Seconds from `started` to the stream's first StreamDelta; closes the stream there."""
    from gateway import provider

    try:
        for event in stream:
            if isinstance(event, provider.StreamDelta):
                return time.perf_counter() - started
        return None
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--out")
    args = parser.parse_args()
    setup_django()

    from django.conf import settings

    from assistant import pipeline, services
    from assistant.models import Conversation
    from gateway import provider

    user = bench_superuser()
    collection = ingest_document()
    assistant = services.assistant_default()
    saved = (assistant.min_similarity, assistant.tools_enabled, list(assistant.collections.all()))
    assistant.min_similarity, assistant.tools_enabled = 0.0, False
    assistant.save(update_fields=["min_similarity", "tools_enabled"])
    assistant.collections.set([collection])

    # Record what the pipeline sends and how soon the model's first delta arrives inside the turn.
    original_stream = provider.chat_stream
    captured: dict[str, Any] = {}

    def recording_stream(messages: Any, **kwargs: Any) -> Iterator[Any]:
        captured["messages"], captured["kwargs"] = messages, kwargs
        captured["first"] = None
        started = time.perf_counter()
        for event in original_stream(messages, **kwargs):
            if captured["first"] is None and isinstance(event, provider.StreamDelta):
                captured["first"] = time.perf_counter() - started
            yield event

    provider.chat_stream = recording_stream  # type: ignore[assignment]

    app: list[float] = []
    app_model: list[float] = []
    raw: list[float] = []
    rows: list[dict[str, Any]] = []
    conversation_ids: list[int] = []
    questions = (QUESTIONS * (args.questions // len(QUESTIONS) + 1))[: args.questions]
    # One throwaway turn loads the model's weights and the shared system prompt into cache.
    try:
        for i, question in enumerate(["What does the travel policy cover?", *questions]):
            conversation = services.conversation_create(user=user, assistant=assistant)
            conversation_ids.append(conversation.pk)
            raw_first_turn = i % 2 == 1
            raw_s: float | None = None
            _, pending = services.message_send(conversation=conversation, text=question)
            if raw_first_turn:
                # Build this question's prompt as the pipeline will, without the model.
                turn = pipeline.Turn(
                    assistant=assistant,
                    user=user,
                    question=question,
                    history=[],
                    config=pipeline.Settings.of(assistant),
                )
                pipeline.retrieve(turn)
                started = time.perf_counter()
                raw_s = first_delta_seconds(
                    original_stream(
                        pipeline.messages(turn),
                        params=turn.config.params(),
                        json_schema=pipeline.ANSWER_SCHEMA,
                    ),
                    started,
                )
            started = time.perf_counter()
            first: float | None = None
            failed = ""
            events = services.answer_stream(message=pending)
            try:
                for event in events:
                    if isinstance(event, pipeline.Delta):
                        first = time.perf_counter() - started
                        break  # as the stop button does: the HTTP stream closes, generation stops
                    if isinstance(event, services.Failed):
                        failed = event.message
            finally:
                events.close()
            if not raw_first_turn:
                started = time.perf_counter()
                raw_s = first_delta_seconds(
                    original_stream(captured["messages"], **captured["kwargs"]), started
                )
            pending.refresh_from_db()
            row = {
                "question": question,
                "order": "raw-first" if raw_first_turn else "app-first",
                "app_first_delta_ms": None if first is None else round(first * 1000, 1),
                "app_model_first_delta_ms": None
                if captured.get("first") is None
                else round(captured["first"] * 1000, 1),
                "raw_first_delta_ms": None if raw_s is None else round(raw_s * 1000, 1),
                "message_status": pending.status,
                "error": failed,
            }
            if i == 0:
                log(f"warm-up turn: {row}")
                continue
            rows.append(row)
            log(f"{i}/{len(questions)}: {row}")
            if first is not None:
                app.append(first)
            if captured.get("first") is not None:
                app_model.append(captured["first"])
            if raw_s is not None:
                raw.append(raw_s)
    finally:
        provider.chat_stream = original_stream  # type: ignore[assignment]
        assistant.min_similarity, assistant.tools_enabled = saved[0], saved[1]
        assistant.save(update_fields=["min_similarity", "tools_enabled"])
        assistant.collections.set([c for c in saved[2] if type(c).objects.filter(pk=c.pk).exists()])
        Conversation.objects.filter(pk__in=conversation_ids).delete()

    result = {
        "benchmark": "ttft",
        "chat_model": settings.CHAT_MODEL,
        "chat_base_url": settings.OPENAI_BASE_URL,
        "questions": len(rows),
        "app_first_delta": latency_summary(app),
        "app_model_first_delta": latency_summary(app_model),
        "raw_first_delta": latency_summary(raw),
        # Whichever call goes first in a turn evaluates the prompt cold (the sources' order
        # changes with the question); the second finds it in llama.cpp's prefix cache.
        "cold_prompt": {
            "app_first_delta": latency_summary(
                [
                    r["app_first_delta_ms"] / 1000
                    for r in rows
                    if r["order"] == "app-first" and r["app_first_delta_ms"]
                ]
            ),
            "app_model_first_delta": latency_summary(
                [
                    r["app_model_first_delta_ms"] / 1000
                    for r in rows
                    if r["order"] == "app-first" and r["app_model_first_delta_ms"]
                ]
            ),
            "raw_first_delta": latency_summary(
                [
                    r["raw_first_delta_ms"] / 1000
                    for r in rows
                    if r["order"] == "raw-first" and r["raw_first_delta_ms"]
                ]
            ),
        },
        "cached_prompt": {
            "app_first_delta": latency_summary(
                [
                    r["app_first_delta_ms"] / 1000
                    for r in rows
                    if r["order"] == "raw-first" and r["app_first_delta_ms"]
                ]
            ),
            "app_model_first_delta": latency_summary(
                [
                    r["app_model_first_delta_ms"] / 1000
                    for r in rows
                    if r["order"] == "raw-first" and r["app_model_first_delta_ms"]
                ]
            ),
            "raw_first_delta": latency_summary(
                [
                    r["raw_first_delta_ms"] / 1000
                    for r in rows
                    if r["order"] == "app-first" and r["raw_first_delta_ms"]
                ]
            ),
        },
        "errors": [r["error"] for r in rows if r["error"]],
        "per_question": rows,
        "environment": environment(),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
