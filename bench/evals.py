"""Evals benchmarks: how fast a suite runs on the local model, what it costs, and how well a judge
model agrees with human labels.

    python bench/evals.py [--cases 12] [--pairs 40] [--judge-model MODEL] [--seed 0]
                          [--skip-run] [--skip-judge] [--out FILE]

Throughput: a SQuAD 2.0 suite of --cases questions (half unanswerable, a deterministic sample)
is imported through the real import service; each question's paragraph is indexed in-process,
then the run answers and grades every case in this process, one after another (what
`run_evals --sync` does), against the configured chat model. Reported: cases per minute, per-case
latency, pass rates per grader, tokens and cost (None-priced answers count as 0).

Judge agreement: the COVID-QA question-similarity pairs (human labels: same question or not) are
put to the judge model with the `judge_same_question` rubric; --pairs draws a balanced
deterministic sample (0: all 488). Reported: agreement, Cohen's kappa, the confusion matrix and
unreadable replies, against the 50 % a constant answer gets. The figure is recorded as a
JudgeCalibration for the judge on the task "question_similarity".

Run it against a database of its own: it creates a suite, a collection and documents. On a
loaded machine the judge's calls outlast the default 60 s timeout; PROVIDER_TIMEOUT=600
PROVIDER_MAX_RETRIES=0 measure the judge rather than the timeouts. With --out, each section is
written as soon as it is done.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CITATIONS,
    DATASETS,
    SQUAD_DEV,
    emit,
    environment,
    latency_summary,
    log,
    setup_django,
)

SIMILARITY = DATASETS / "covid-qa" / "eval_question_similarity_en.csv"
SUITE = "evalsbench-squad"  # not "bench-*": those collections belong to the retrieval benchmarks
CITATIONS = {
    **CITATIONS,
    "covid-qa-similarity": "COVID-QA question similarity (deepset-ai/COVID-QA, "
    "eval_question_similarity_en.csv), Apache-2.0",
}


def run_throughput(cases: int, seed: int) -> dict[str, Any]:
    from evals import datasets, selectors, services
    from evals.models import Case, Result, Suite
    from gateway import provider

    dataset = datasets.parse_squad(SQUAD_DEV.read_bytes(), limit=cases, seed=seed)
    existing = Suite.objects.filter(name=SUITE).first()
    if existing is not None:
        existing.cases.all().delete()  # a fresh sample each time; documents are reused when identical
    outcome = services.cases_import(
        suite_name=SUITE, dataset=dataset, source=Case.Source.SQUAD, enqueue_indexing=False
    )
    started = time.perf_counter()
    failed = services.documents_index(document_ids=outcome.document_ids)
    index_s = time.perf_counter() - started
    if failed:
        raise SystemExit(f"documents {failed} failed to index")
    log(f"{outcome.created} cases, {len(outcome.document_ids)} paragraphs indexed in {index_s:.1f} s")

    provider.chat([{"role": "user", "content": "Say OK."}])  # load the model before the clock starts
    run = services.run_start(suite=outcome.suite, enqueue=False)
    seconds: list[float] = []
    started = time.perf_counter()
    for done, result_id in enumerate(run.results.order_by("case_id").values_list("pk", flat=True), start=1):
        began = time.perf_counter()
        status = services.result_execute(result_id=result_id)
        seconds.append(time.perf_counter() - began)
        log(f"case {done}/{cases}: {status} in {seconds[-1]:.1f} s")
    wall = time.perf_counter() - started
    run.refresh_from_db()
    summary = selectors.run_summary(run)

    by_behaviour: dict[str, Counter[str]] = {"answer": Counter(), "abstain": Counter()}
    asked_model = 0
    for result in Result.objects.filter(run=run).select_related("case", "answer"):
        by_behaviour[result.case.expected_behaviour][result.status] += 1
        asked_model += bool(result.answer and result.answer.completion_tokens)
    return {
        "cases": cases,
        "answerable": dataset.notes["sampled"] - dataset.notes["unanswerable"],
        "unanswerable": dataset.notes["unanswerable"],
        "sample_seed": seed,
        "indexing_s": round(index_s, 1),
        "wall_s": round(wall, 1),
        "cases_per_minute": round(60 * cases / wall, 2) if wall else None,
        "per_case": latency_summary(seconds),
        "reached_the_model": asked_model,
        "pass_rate": summary["pass_rate"],
        "pass_rate_answerable": _share(by_behaviour["answer"]),
        "pass_rate_unanswerable": _share(by_behaviour["abstain"]),
        "counts": summary["counts"],
        "graders": {name: g["pass_rate"] for name, g in summary["graders"].items()},
        "cost": run_cost_from_calls(run.pk),
        "run": run.pk,
        "model": run.model,
        "prompt_version": run.prompt.version,
    }


# What the same token counts would cost on a hosted provider, from usage.ModelPrice. Hypothetical:
# another model tokenises differently and would answer (and abstain) differently.
HYPOTHETICAL_PRICES = {"chat": "gpt-4o-mini", "embed": "text-embedding-3-small"}


def run_cost_from_calls(run_id: int) -> dict[str, Any]:
    """The run's cost from its usage.ModelCall rows (the answers' calls and the judge's, attached to
    the answers), by purpose, with the same tokens priced at the hosted prices above."""
    from django.db.models import Count, Q, Sum

    from evals import selectors
    from evals.models import Run
    from usage.models import ModelCall, ModelPrice

    calls = ModelCall.objects.filter(answer__eval_results__run_id=run_id)
    by_purpose: dict[str, dict[str, Any]] = {}
    hypothetical = 0.0
    for row in (
        calls.values("purpose", "kind", "model")
        .annotate(
            calls=Count("pk"),
            prompt=Sum("prompt_tokens"),
            cached=Sum("cached_tokens"),
            completion=Sum("completion_tokens"),
            spent=Sum("cost"),
            unpriced=Count("pk", filter=Q(cost__isnull=True)),
        )
        .order_by("purpose", "kind")
    ):
        entry = by_purpose.setdefault(
            row["purpose"],
            {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "unpriced_calls": 0},
        )
        entry["calls"] += row["calls"]
        entry["prompt_tokens"] += row["prompt"] or 0
        entry["completion_tokens"] += row["completion"] or 0
        entry["cost_usd"] += float(row["spent"] or 0)
        entry["unpriced_calls"] += row["unpriced"]
        hosted = "embed" if row["kind"] == "embed" else "chat"
        price = ModelPrice.objects.filter(model=HYPOTHETICAL_PRICES[hosted]).first()
        if price is not None:
            hypothetical += float(
                price.cost(
                    prompt_tokens=row["prompt"] or 0,
                    cached_tokens=row["cached"] or 0,
                    completion_tokens=row["completion"] or 0,
                )
            )
    chat = [e for p, e in by_purpose.items() if p != "embedding"]
    return {
        "source": "usage.ModelCall rows attached to the run's answers",
        "model_calls": sum(e["calls"] for e in by_purpose.values()),
        "by_purpose": by_purpose,
        "cost_usd": round(sum(e["cost_usd"] for e in by_purpose.values()), 6),
        "unpriced_calls": sum(e["unpriced_calls"] for e in by_purpose.values()),
        "chat_tokens": sum(e["prompt_tokens"] + e["completion_tokens"] for e in chat),
        "embedding_tokens": by_purpose.get("embedding", {}).get("prompt_tokens", 0),
        "hypothetical_hosted_cost_usd": round(hypothetical, 6),
        "hypothetical_prices": HYPOTHETICAL_PRICES,
        "run_summary_cost": selectors.run_cost(Run.objects.get(pk=run_id)),
    }


def _share(counts: Counter[str]) -> float | None:
    finished = counts["passed"] + counts["failed"] + counts["errored"]
    return round(counts["passed"] / finished, 4) if finished else None


def similarity_pairs(limit: int, seed: int) -> list[tuple[str, str, bool]]:
    with SIMILARITY.open(encoding="utf-8", newline="") as handle:
        rows = [
            (r["question_1"], r["question_2"], r["similar"].strip() == "1") for r in csv.DictReader(handle)
        ]
    if not limit or limit >= len(rows):
        return rows
    rng = random.Random(seed)
    same = [r for r in rows if r[2]]
    different = [r for r in rows if not r[2]]
    chosen = rng.sample(same, limit // 2) + rng.sample(different, limit - limit // 2)
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(chosen, key=lambda r: order[id(r)])


def kappa(confusion: Counter[tuple[bool, bool]]) -> float | None:
    n = sum(confusion.values())
    if not n:
        return None
    observed = (confusion[(True, True)] + confusion[(False, False)]) / n
    human_yes = (confusion[(True, True)] + confusion[(True, False)]) / n
    judge_yes = (confusion[(True, True)] + confusion[(False, True)]) / n
    expected = human_yes * judge_yes + (1 - human_yes) * (1 - judge_yes)
    return round((observed - expected) / (1 - expected), 4) if expected < 1 else None


def judge_agreement(pairs: int, seed: int, model: str) -> dict[str, Any]:
    from evals import graders, selectors, services
    from gateway import provider
    from usage import services as usage
    from usage.services import Purpose

    labelled = similarity_pairs(pairs, seed)
    tokens = [0, 0]  # prompt, completion
    confusion: Counter[tuple[bool, bool]] = Counter()  # (human says same, judge says same)
    unreadable = 0
    errors = 0
    seconds: list[float] = []
    examples: list[dict[str, Any]] = []
    for i, (first, second, same) in enumerate(labelled, start=1):
        began = time.perf_counter()
        try:
            with usage.tracking(user=None, purpose=Purpose.JUDGE) as tracker, provider.purpose(Purpose.JUDGE):
                verdict = graders.judge_same_question(first, second, model=model)
            tokens[0] += tracker.prompt_tokens
            tokens[1] += tracker.completion_tokens
        except Exception as exc:  # a failed call is a disagreement, counted and reported
            log(f"pair {i}: {exc}")
            errors += 1
            confusion[(same, not same)] += 1
            continue
        seconds.append(time.perf_counter() - began)
        unreadable += verdict.reasoning.startswith("The judge's reply could not be read")
        confusion[(same, verdict.passed)] += 1
        if len(examples) < 4 and verdict.passed != same:
            examples.append({"a": first, "b": second, "human": same, "judge_reasoning": verdict.reasoning})
        if i % 10 == 0 or i == len(labelled):
            agreed = confusion[(True, True)] + confusion[(False, False)]
            log(f"judge: {i}/{len(labelled)} pairs, agreement so far {agreed / i:.0%}")
    n = sum(confusion.values())
    agreed = confusion[(True, True)] + confusion[(False, False)]
    calibration = services.judge_calibration_record(
        judge_model=model,
        grader="question_similarity",
        agreed=agreed,
        n=n,
        dataset=f"COVID-QA question similarity, {n} pairs (seed {seed})",
        details={"kappa": kappa(confusion), "unreadable": unreadable, "errors": errors},
    )
    return {
        "judge_model": model,
        "task": "are these two questions the same? (rubric: evals.graders.SAME_QUESTION_RUBRIC)",
        "pairs": n,
        "labelled_same": sum(1 for _, _, s in labelled if s),
        "agreement": round(agreed / n, 4) if n else None,
        "constant_answer_agreement": round(
            max(sum(1 for *_, s in labelled if s), sum(1 for *_, s in labelled if not s)) / n, 4
        )
        if n
        else None,
        "cohen_kappa": kappa(confusion),
        "confusion": {
            "same_judged_same": confusion[(True, True)],
            "same_judged_different": confusion[(True, False)],
            "different_judged_same": confusion[(False, True)],
            "different_judged_different": confusion[(False, False)],
        },
        "unreadable_replies": unreadable,
        "errors": errors,
        "per_pair": latency_summary(seconds),
        "prompt_tokens": tokens[0],
        "completion_tokens": tokens[1],
        "trusted": agreed / n >= selectors.judge_min_agreement() if n else False,
        "min_agreement": selectors.judge_min_agreement(),
        "calibration_id": calibration.pk,
        "disagreements": examples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12, help="SQuAD questions in the suite (default 12)")
    parser.add_argument(
        "--pairs", type=int, default=40, help="labelled question pairs for the judge (default 40; 0: all)"
    )
    parser.add_argument("--judge-model", help="default: JUDGE_MODEL, else CHAT_MODEL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-run", action="store_true")
    parser.add_argument("--skip-judge", action="store_true")
    parser.add_argument("--out", help="also write the JSON result to this file")
    args = parser.parse_args()

    setup_django()
    from django.conf import settings

    result: dict[str, Any] = {"benchmark": "evals", "environment": environment()}
    result["environment"]["chat_model"] = settings.CHAT_MODEL
    result["environment"]["chat_base_url"] = settings.OPENAI_BASE_URL
    result["environment"]["judge_model_setting"] = settings.JUDGE_MODEL
    result["environment"]["provider_timeout_s"] = settings.PROVIDER_TIMEOUT
    result["environment"]["provider_max_retries"] = settings.PROVIDER_MAX_RETRIES
    if not args.skip_run:
        result["throughput"] = run_throughput(args.cases, args.seed)
        if args.out and not args.skip_judge:
            Path(args.out).write_text(
                json.dumps(result, indent=2, default=str) + "\n"
            )  # the judge takes long
    if not args.skip_judge:
        model = args.judge_model or getattr(settings, "JUDGE_MODEL", "") or settings.CHAT_MODEL
        result["judge"] = judge_agreement(args.pairs, args.seed, model)
    result["environment"]["load_average_1m_after"] = environment()["load_average_1m"]
    result["datasets"] = [CITATIONS["squad"], CITATIONS["covid-qa-similarity"]]
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
