"""What the person asking gets, end to end: the shown answer on SQuAD 2.0 and DRCD, evidence on and off.

Each dataset's paragraphs (from a sample of its articles) are indexed as one document each in a
collection of their own; questions about those articles are asked through the real chat path
(`services.message_send` + `services.answer_stream`, as the chat page does) with the configured
chat model, once with evidence answers on and once off, in the same run. For each answer:

- correct: the text shown as the answer holds a gold answer span (SQuAD's normalisation; a
  plain substring for Chinese);
- abstained: an unanswerable question got no answer (`answer_source` "none");
- wrong without warning: an answer was shown, it holds no gold span (or the question has none),
  and nothing on it warns the reader (its state is "grounded": no low-confidence or
  not-supported badge);
- time to evidence (message claimed to the "From your documents" event) and to the final answer.

Rates come with 95% Wilson intervals. The answer cache is off, so each mode asks the model.

    python bench/answer_quality.py [--squad-answerable 40] [--squad-unanswerable 40] [--drcd 40]
        [--articles-squad 4] [--articles-drcd 40] [--seed 0] [--modes on,off]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    DATASETS,
    SQUAD_DEV,
    TextDoc,
    bench_superuser,
    emit,
    environment,
    ingest_pending,
    latency_summary,
    load_json,
    log,
    setup_django,
    upload_texts,
)

DRCD_DEV = DATASETS / "drcd" / "DRCD_dev.json"
CITATIONS = {
    "squad": "SQuAD 2.0 dev, CS224N half (chrischute/squad, data/dev-v2.0.json), CC BY-SA 4.0",
    "drcd": "DRCD dev (DRCKnowledgeTeam/DRCD, DRCD_dev.json), CC BY-SA 3.0",
}


@dataclass(frozen=True)
class Item:
    dataset: str
    question: str
    answers: tuple[str, ...]  # empty: unanswerable
    collection: str


@dataclass
class Tally:
    n: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    to_evidence: list[float] = field(default_factory=list)
    to_answer: list[float] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)


def wilson(k: int, n: int, z: float = 1.96) -> list[float] | None:
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3)]


def rate(k: int, n: int) -> dict[str, Any]:
    return {"k": k, "n": n, "rate": round(k / n, 3) if n else None, "ci95": wilson(k, n)}


# --- data ------------------------------------------------------------------------------------


def squad_items(
    articles: int, answerable: int, unanswerable: int, seed: int
) -> tuple[list[TextDoc], list[Item]]:
    data = load_json(SQUAD_DEV)["data"][:articles]
    docs, able, unable = [], [], []
    for a, article in enumerate(data):
        title = article["title"].replace("_", " ")
        for p, paragraph in enumerate(article["paragraphs"]):
            docs.append(TextDoc(f"answers-squad-{a:02d}-{p:03d}.txt", title, paragraph["context"]))
            for qa in paragraph["qas"]:
                gold = tuple(sorted({x["text"] for x in qa.get("answers", [])}))
                item = Item(
                    "squad", qa["question"], () if qa.get("is_impossible") else gold, "bench-answers-squad"
                )
                (unable if qa.get("is_impossible") else able).append(item)
    rng = random.Random(seed)
    return docs, rng.sample(able, min(answerable, len(able))) + rng.sample(
        unable, min(unanswerable, len(unable))
    )


def drcd_items(articles: int, count: int, seed: int) -> tuple[list[TextDoc], list[Item]]:
    data = load_json(DRCD_DEV)["data"][:articles]
    docs, items = [], []
    for a, article in enumerate(data):
        for p, paragraph in enumerate(article["paragraphs"]):
            docs.append(TextDoc(f"answers-drcd-{a:03d}-{p:02d}.txt", article["title"], paragraph["context"]))
            for qa in paragraph["qas"]:
                gold = tuple(sorted({x["text"] for x in qa["answers"]}))
                items.append(Item("drcd", qa["question"], gold, "bench-answers-drcd"))
    return docs, random.Random(seed).sample(items, min(count, len(items)))


def index(name: str, docs: list[TextDoc]) -> Any:
    """The dataset's collection, every paragraph one document (identical uploads are not re-indexed)."""
    from django.conf import settings

    from knowledge import services
    from knowledge.models import Collection

    collection = Collection.objects.filter(name=name).first() or services.collection_create(
        name=name, description="Benchmark data; safe to delete."
    )
    ids = upload_texts(collection, docs, enqueue=False)
    previous = settings.CHUNK_MAX_TOKENS
    settings.CHUNK_MAX_TOKENS = 512  # a paragraph stays one chunk, as in bench/retrieval_quality.py
    try:
        ingest_pending(ids, label=name)
    finally:
        settings.CHUNK_MAX_TOKENS = previous
    return collection


def assistant_for(collection: Any, *, evidence: bool) -> Any:
    from assistant import services
    from assistant.models import Assistant

    name = f"{collection.name} ({'evidence' if evidence else 'no evidence'})"
    default = services.assistant_default()
    assistant, _ = Assistant.objects.update_or_create(
        name=name,
        defaults={
            "prompt": default.prompt,
            "evidence_answers": evidence,
            "scope": "",
            "is_default": False,
        },
    )
    assistant.collections.set([collection])
    return assistant


# --- asking ----------------------------------------------------------------------------------


def ask(user: Any, assistant: Any, question: str) -> tuple[Any, float | None, float]:
    """One question through the chat's own path: (saved answer, seconds to evidence, seconds to the end)."""
    from assistant import pipeline, services

    conversation = services.conversation_create(user=user, assistant=assistant)
    _, pending = services.message_send(conversation=conversation, text=question)
    started = time.perf_counter()
    to_evidence = None
    for event in services.answer_stream(message=pending):
        if isinstance(event, pipeline.EvidenceFound) and to_evidence is None:
            to_evidence = time.perf_counter() - started
    total = time.perf_counter() - started
    pending.refresh_from_db()
    return getattr(pending, "answer", None), to_evidence, total


def grade(item: Item, answer: Any) -> dict[str, bool]:
    from assistant.models import AnswerSource
    from evals.graders import answer_text, normalised_contains

    if answer is None:
        return {"errored": True}
    shown = answer.answer_source != AnswerSource.NONE and not answer.abstained
    text = answer_text(answer)
    correct = shown and any(normalised_contains(text, gold) for gold in item.answers)
    warned = answer.state in {"uncertain", "ungrounded"}
    return {
        "shown": shown,
        "correct": correct,
        "abstained": not shown,
        "wrong_unwarned": shown and not correct and not warned,
        "wrong_warned": shown and not correct and warned,
        f"source_{answer.answer_source}": True,
    }


def summarise(tally: Tally, answerable: bool) -> dict[str, Any]:
    c = tally.counts
    out: dict[str, Any] = {
        "questions": tally.n,
        "errored": c["errored"],
        "answer_source": {
            k.removeprefix("source_"): v for k, v in sorted(c.items()) if k.startswith("source_")
        },
        "wrong_without_warning": rate(c["wrong_unwarned"], tally.n),
        "wrong_with_warning": rate(c["wrong_warned"], tally.n),
        "time_to_evidence": latency_summary(tally.to_evidence),
        "time_to_answer": latency_summary(tally.to_answer),
    }
    if answerable:
        out["answered_correctly"] = rate(c["correct"], tally.n)
        out["abstained"] = rate(c["abstained"], tally.n)
    else:
        out["abstained_on_unanswerable"] = rate(c["abstained"], tally.n)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--squad-answerable", type=int, default=40)
    parser.add_argument("--squad-unanswerable", type=int, default=40)
    parser.add_argument("--drcd", type=int, default=40)
    parser.add_argument("--articles-squad", type=int, default=4)
    parser.add_argument("--articles-drcd", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default="on,off", help="evidence answers on, off, or both (in that order)")
    parser.add_argument("--examples", type=int, default=3, help="answers quoted per group in the output")
    parser.add_argument("--out")
    args = parser.parse_args()
    setup_django()
    from django.conf import settings

    settings.ANSWER_CACHE_ENABLED = False  # every question reaches the model, in both modes

    squad_docs, squad = squad_items(
        args.articles_squad, args.squad_answerable, args.squad_unanswerable, args.seed
    )
    drcd_docs, drcd = drcd_items(args.articles_drcd, args.drcd, args.seed)
    collections = {
        "bench-answers-squad": index("bench-answers-squad", squad_docs),
        "bench-answers-drcd": index("bench-answers-drcd", drcd_docs),
    }
    user = bench_superuser()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    items = squad + drcd
    tallies: dict[tuple[str, str, bool], Tally] = {}
    started = time.perf_counter()
    for i, item in enumerate(items, start=1):
        for mode in modes:
            assistant = assistant_for(collections[item.collection], evidence=mode == "on")
            answer, to_evidence, total = ask(user, assistant, item.question)
            tally = tallies.setdefault((item.dataset, mode, bool(item.answers)), Tally())
            tally.n += 1
            grades = grade(item, answer)
            tally.counts.update(k for k, v in grades.items() if v)
            if to_evidence is not None:
                tally.to_evidence.append(to_evidence)
            tally.to_answer.append(total)
            if answer is not None and len(tally.examples) < args.examples:
                tally.examples.append(
                    {
                        "question": item.question,
                        "gold": list(item.answers[:2]),
                        "shown": answer.text[:300],
                        "answer_source": answer.answer_source,
                        "state": answer.state,
                        "model_text": (answer.model_text or "")[:200],
                        "correct": grades.get("correct", False),
                    }
                )
        if i % 5 == 0 or i == len(items):
            log(f"{i}/{len(items)} questions in {time.perf_counter() - started:.0f} s")

    results: dict[str, Any] = {}
    for (dataset, mode, answerable), tally in sorted(tallies.items()):
        group = f"{dataset}_{'answerable' if answerable else 'unanswerable'}"
        results.setdefault(f"evidence_{mode}", {})[group] = {
            **summarise(tally, answerable),
            "examples": tally.examples,
        }
    for mode in modes:
        groups = [t for (d, m, a), t in tallies.items() if m == mode]
        everything = Tally()
        for t in groups:
            everything.n += t.n
            everything.counts.update(t.counts)
        results[f"evidence_{mode}"]["all"] = {
            "questions": everything.n,
            "wrong_without_warning": rate(everything.counts["wrong_unwarned"], everything.n),
        }
    emit(
        {
            "benchmark": "answer_quality",
            "environment": environment(),
            "chat_model": settings.CHAT_MODEL,
            "datasets": CITATIONS,
            "setup": {
                "squad_articles": args.articles_squad,
                "squad_paragraphs": len(squad_docs),
                "drcd_articles": args.articles_drcd,
                "drcd_paragraphs": len(drcd_docs),
                "sampling": f"random.Random({args.seed})",
                "targets": {
                    "answered_correctly": ">= 0.60 of answerable",
                    "abstained_on_unanswerable": ">= 0.80",
                    "wrong_without_warning": "<= 0.05 of all answers",
                    "time_to_evidence_p95_ms": "<= 500",
                },
            },
            "results": results,
            "duration_s": round(time.perf_counter() - started, 1),
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
