"""Routing: the router's decisions against labelled questions, and what routing saves on a workload.

1. **Accuracy.** `routing.policy.route_decide` with the example policy (`routing.policy.EXAMPLE`:
   rules, then the classifier) decides each question of two labelled sets, without a retrieval
   score (neither set has knowledge indexed for it):
   - COVID-QA's held-out split (routing/training.py): "hard" when the gold answer runs past 10
     words. This is the proxy label the classifier was fitted on (on the other split).
   - `bench/data/routing_labelled.jsonl`: 48 questions labelled easy or hard by the criterion
     on its first line, written by the developers, so small and close to the rules' authors:
     a sanity check more than a measure.
   For each: accuracy, the strong route's precision and recall, the share sent strong, the
   majority baseline, and the classifier alone (its probability at the policy's threshold).
2. **Cost of a replayed workload.** The CDC FAQ of COVID-QA (`faq_covidbert.csv`): its answers
   are indexed as documents with the configured (real) embedding model, and its questions and
   their paraphrases (`eval_question_similarity_en.csv`, pairs marked similar) are asked
   through the real pipeline (`assistant.pipeline.run_to_done`: retrieval, input checks, the
   router with the example policy, the prompt as built). The chat model is an instant stand-in
   that returns the FAQ's own answer in the answer schema, so each completion is as long as a
   real answer to that question; no answer quality is claimed from it. Tokens are counted the
   way the gateway counts what a server does not report (`gateway.provider.estimate_tokens`,
   four characters a token; the same for both models). The workload is priced with PRICES,
   public list prices for two real models, routed against strong-only and cheap-only.
3. **Quality per route** needs two real models and an eval run with each (`/evals/`, compared
   on `/routing/`). With the single local model nothing is measured, and the output says so.

Runs in a throw-away database on the configured PostgreSQL server, dropped at the end. Prints
one JSON object.

    python bench/routing.py [--paraphrases-per-question 3] [--out FILE]

Data: COVID-QA (deepset-ai/COVID-QA), Apache-2.0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    DATASETS,
    cdc_faq,
    cdc_faq_pairs,
    emit,
    environment,
    faq_doc,
    ingest_pending,
    log,
    setup_django,
    throwaway_database,
    upload_texts,
)

LABELLED = Path(__file__).resolve().parent / "data" / "routing_labelled.jsonl"
CITATION = (
    "COVID-QA (deepset-ai/COVID-QA: 200423_covidQA.json, faq_covidbert.csv, "
    "eval_question_similarity_en.csv), Apache-2.0"
)
# USD per million tokens (input, output), the provider's list prices for these two models, as
# published on OpenAI's pricing page (platform.openai.com/docs/pricing) from 2024-08 on. No
# prompt caching is assumed: every input token is priced in full.
PRICES = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
}
PRICES_SOURCE = "OpenAI's list prices (platform.openai.com/docs/pricing), 2024-08 on; no prompt caching"
TARGET_SAVING = 0.40


def _faq() -> list[tuple[str, str, list[str]]]:
    """(question, answer, paraphrases) of the CDC FAQ, each question once."""
    answers = cdc_faq()
    paraphrases: dict[str, list[str]] = {}
    for question, other, similar in cdc_faq_pairs(answers):
        if similar:
            paraphrases.setdefault(question, []).append(other)
    return [(q, a, list(dict.fromkeys(paraphrases.get(q, [])))) for q, a in answers.items()]


# --- accuracy ----------------------------------------------------------------------------------


def _scores(predicted: Sequence[bool], labelled: Sequence[bool]) -> dict[str, Any]:
    """Agreement of "sent strong" with "labelled hard"."""
    n = len(labelled)
    hits = sum(p == t for p, t in zip(predicted, labelled, strict=True))
    true_strong = sum(p and t for p, t in zip(predicted, labelled, strict=True))
    sent, hard = sum(predicted), sum(labelled)
    return {
        "n": n,
        "accuracy": round(hits / n, 4) if n else None,
        "strong_precision": round(true_strong / sent, 4) if sent else None,
        "strong_recall": round(true_strong / hard, 4) if hard else None,
        "sent_strong": round(sent / n, 4) if n else None,
        "labelled_hard": round(hard / n, 4) if n else None,
        "majority_baseline": round(max(hard, n - hard) / n, 4) if n else None,
    }


def _rule(reason: str) -> str:
    """Which of route_decide's rules sent a question to the strong model, from its reason."""
    for prefix, rule in (
        ("Retrieval confidence", "weak retrieval"),
        ("It is long", "long"),
        ("It asks", "several questions"),
        ("It is a", "question type"),
        ("The classifier", "classifier"),
    ):
        if reason.startswith(prefix):
            return rule
    return "other"


def _accuracy(questions: Sequence[tuple[str, bool]]) -> dict[str, Any]:
    """The router (rules, then classifier) and the classifier alone, against the labels."""
    from assistant.models import Assistant
    from routing.features import question_features
    from routing.policy import EXAMPLE, STRONG, RoutingPolicy, route_decide, strong_probability

    policy = RoutingPolicy.from_dict(EXAMPLE)
    assert policy is not None
    assistant = Assistant(name="bench-routing", routing=EXAMPLE)
    labels = [hard for _, hard in questions]
    decisions = [route_decide(assistant=assistant, question=q, retrieval_score=None) for q, _ in questions]
    router = [d.route == STRONG for d in decisions]
    classifier = [strong_probability(question_features(q)) >= policy.strong_threshold for q, _ in questions]
    reasons: dict[str, int] = {}
    for decision in decisions:
        key = _rule(decision.reason) if decision.route == STRONG else "cheap"
        reasons[key] = reasons.get(key, 0) + 1
    wrong = [
        {"question": q, "labelled": "hard" if hard else "easy", "reason": d.reason}
        for (q, hard), d, sent in zip(questions, decisions, router, strict=True)
        if sent != hard
    ]
    return {
        "router": _scores(router, labels),
        "classifier_alone": _scores(classifier, labels),
        "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "disagreements": wrong,
    }


def _covid_held_out() -> list[tuple[str, bool]]:
    from routing import training

    return [(r.question, bool(r.label)) for r in training.covid_qa(DATASETS) if r.split == "test"]


def _hand_labelled() -> tuple[str, list[tuple[str, bool]]]:
    lines = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    criterion = str(lines[0]["criterion"])
    return criterion, [(str(row["question"]), row["label"] == "hard") for row in lines[1:]]


# --- the replayed workload ---------------------------------------------------------------------


class _StandIn:
    """An instant chat model that answers with the FAQ's own answer, recording each call."""

    def __init__(self) -> None:
        self.answer = ""
        self.calls: list[dict[str, Any]] = []

    def _reply(self, messages: Sequence[dict[str, Any]], params: Any) -> Any:
        from gateway import provider

        content = json.dumps(
            {
                "answer": f"{self.answer} [1]",
                "citations": [1],
                "confidence": 0.9,
                "not_found": False,
                "follow_ups": [],
            }
        )
        # What a real answer of this length would be billed: capped at the request's max_tokens.
        completion = min(provider.estimate_tokens(content), int(params.max_tokens))
        # The gateway's own count for a server that reports none.
        prompt = provider.prompt_estimate(messages)
        usage = provider.Usage(prompt_tokens=prompt, completion_tokens=completion, estimated=True)
        self.calls.append({"model": params.model, "prompt": usage.prompt_tokens, "completion": completion})
        return provider.ChatResult(
            content=content,
            model=str(params.model),
            usage=usage,
            latency_ms=0.0,
            system_fingerprint=None,
            finish_reason="stop",
        )

    def chat_stream(self, messages: Sequence[dict[str, Any]], *, params: Any, **_: Any) -> Iterator[Any]:
        from gateway import provider

        result = self._reply(messages, params)
        yield provider.StreamDelta(result.content)
        yield result

    def chat(self, messages: Sequence[dict[str, Any]], *, params: Any, **_: Any) -> Any:
        return self._reply(messages, params)


def _cost(calls: Sequence[dict[str, Any]], model: str | None = None) -> float:
    """USD for `calls`, each priced for its own model, or all for `model`."""
    total = 0.0
    for call in calls:
        per_input, per_output = PRICES[model or call["model"]]
        total += (call["prompt"] * per_input + call["completion"] * per_output) / 1_000_000
    return total


def _replay(args: argparse.Namespace) -> dict[str, Any]:
    from assistant import pipeline
    from assistant import services as assistant_services
    from gateway import provider
    from knowledge import services as knowledge
    from routing.policy import EXAMPLE

    faq = _faq()
    collection = knowledge.collection_create(name="bench-routing-faq", is_public=True)
    docs = [faq_doc(i, question, answer) for i, (question, answer, _) in enumerate(faq)]
    ingest_pending(upload_texts(collection, docs, enqueue=False), label="FAQ")

    from django.contrib.auth.models import User

    user = User.objects.create_user(username="bench-routing", password=None)
    assistant = assistant_services.assistant_default()
    assistant.collections.set([collection])
    assistant.routing = EXAMPLE
    assistant.min_similarity = 0.0  # every question reaches the router, as in a busy help desk
    assistant.save(update_fields=["routing", "min_similarity"])

    stand_in = _StandIn()
    provider.chat_stream = stand_in.chat_stream  # type: ignore[assignment]
    provider.chat = stand_in.chat  # type: ignore[assignment]
    workload = [
        (asked, answer)
        for question, answer, paraphrases in faq
        for asked in [question, *paraphrases[: args.paraphrases_per_question]]
    ]
    routes: dict[str, int] = {}
    reasons: dict[str, int] = {}
    unanswered: dict[str, int] = {}
    per_question: list[dict[str, Any]] = []
    for i, (asked, answer) in enumerate(workload, start=1):
        stand_in.answer = answer
        before = len(stand_in.calls)
        done = pipeline.run_to_done(assistant=assistant, user=user, question=asked)
        route = done.answer.route or {}
        kind = str(route.get("route") or "no model call")
        routes[kind] = routes.get(kind, 0) + 1
        if kind == "strong":
            key = _rule(str(route.get("reason", "")))
            reasons[key] = reasons.get(key, 0) + 1
        elif not route:
            why = done.answer.abstain_reason or "no model call"
            unanswered[why] = unanswered.get(why, 0) + 1
        calls = stand_in.calls[before:]
        per_question.append({"question": asked, "route": kind, "calls": calls})
        if i % 100 == 0 or i == len(workload):
            log(f"workload: {i}/{len(workload)} questions")

    calls = [call for row in per_question for call in row["calls"]]
    routed, strong_only, cheap_only = _cost(calls), _cost(calls, "gpt-4o"), _cost(calls, "gpt-4o-mini")
    saving = 1 - routed / strong_only if strong_only else None
    return {
        "questions": len(workload),
        "faq_questions": len(faq),
        "paraphrases_per_question_at_most": args.paraphrases_per_question,
        "model_calls": len(calls),
        "routes": routes,
        "strong_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "stopped_before_the_model": dict(sorted(unanswered.items(), key=lambda kv: -kv[1])),
        "tokens": {
            "prompt": sum(c["prompt"] for c in calls),
            "completion": sum(c["completion"] for c in calls),
            "counted_as": "gateway.provider.estimate_tokens (4 characters a token), for both models",
        },
        "cost_usd": {
            "routed": round(routed, 4),
            "strong_only": round(strong_only, 4),
            "cheap_only": round(cheap_only, 4),
        },
        "saving_against_strong_only": None if saving is None else round(saving, 4),
        "target_saving": TARGET_SAVING,
        "target_saving_met": None if saving is None else saving >= TARGET_SAVING,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--paraphrases-per-question", type=int, default=3, help="paraphrases asked after each FAQ question"
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    setup_django()

    from django.conf import settings

    criterion, hand = _hand_labelled()
    result: dict[str, Any] = {
        "benchmark": "routing",
        "dataset": CITATION,
        "policy": "routing.policy.EXAMPLE",
        "prices_usd_per_million_tokens": {m: {"input": i, "output": o} for m, (i, o) in PRICES.items()},
        "prices_source": PRICES_SOURCE,
        "accuracy": {
            "covid_qa_held_out": {
                "label": "hard = the gold answer runs past 10 words (the classifier's proxy label)",
                **_accuracy(_covid_held_out()),
            },
            "hand_labelled": {
                "file": "bench/data/routing_labelled.jsonl",
                "label": criterion,
                **_accuracy(hand),
            },
            "retrieval_score": "not given: the retrieval rule (min_retrieval_score) is not exercised here",
        },
    }
    settings.ANSWER_CACHE_ENABLED = False  # every question of the workload reaches a model
    with throwaway_database("bench_routing"):
        result["workload"] = _replay(args)
    chat_model = settings.CHAT_MODEL
    result["quality"] = {
        "measured": False,
        "why": (
            f"one chat model is configured here ({chat_model}); the pass rate of each route needs two "
            "real models and an eval run with each (/evals/, compared on /routing/). The target "
            "(at least 40% cheaper at no more than 2 points lower pass rate) is judged on cost alone above."
        ),
    }
    result["environment"] = environment()
    emit(result, args.out)


if __name__ == "__main__":
    main()
