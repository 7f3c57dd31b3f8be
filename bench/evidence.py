"""Evidence selection and its calibration, on SQuAD 2.0 and DRCD, without the chat model.

For every question about the indexed articles (the collections `bench/answer_quality.py` builds:
every paragraph one document), the product's own `search()` retrieves the assistant's `top_k`
chunks and `assistant.evidence` ranks their sentences. Measured:

- selection: how often the evidence answer (`evidence.answer_parts`) holds a gold answer span,
  for the product's ranking and for each signal alone (words only, the embedding only, both,
  with and without the shortlist), so each signal has to earn its place;
- calibration: a logistic model of "the evidence answer holds the answer" over the selection's
  features, fitted on the calibration half of the articles (a hash of the title) and reported
  on the other half: for each strength threshold, the share of answerable questions answered
  correctly, the share of unanswerable questions answered anyway, and the precision of what is
  shown. Unanswerable questions are SQuAD 2.0's (a plausible paragraph that does not hold the
  answer) and "not in the knowledge" ones (an answerable question whose own paragraph is taken
  out of what retrieval returned), for both datasets.

Embeddings are cached in .data/bench-cache/ (by model and text), so a rerun embeds nothing new.

    python bench/evidence.py [--articles-squad 4] [--articles-drcd 40] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.answer_quality import CITATIONS, DRCD_DEV, index, wilson  # noqa: E402
from bench.common import (  # noqa: E402
    REPO_ROOT,
    SQUAD_DEV,
    TextDoc,
    bench_superuser,
    emit,
    environment,
    load_json,
    log,
    setup_django,  # noqa: E402
)

VECTOR_DIR = REPO_ROOT / ".data" / "bench-cache"
FEATURES = ("semantic", "lexical", "retrieval", "margin")


@dataclass(frozen=True)
class Question:
    dataset: str
    text: str
    answers: tuple[str, ...]
    paragraph: str  # the file name of its own paragraph
    article: str
    impossible: bool


def questions(dataset: str, articles: int) -> tuple[list[TextDoc], list[Question]]:
    docs: list[TextDoc] = []
    out: list[Question] = []
    if dataset == "squad":
        for a, article in enumerate(load_json(SQUAD_DEV)["data"][:articles]):
            title = article["title"].replace("_", " ")
            for p, paragraph in enumerate(article["paragraphs"]):
                name = f"answers-squad-{a:02d}-{p:03d}.txt"
                docs.append(TextDoc(name, title, paragraph["context"]))
                for qa in paragraph["qas"]:
                    gold = tuple(sorted({x["text"] for x in qa.get("answers", [])}))
                    out.append(
                        Question("squad", qa["question"], gold, name, title, bool(qa.get("is_impossible")))
                    )
    else:
        for a, article in enumerate(load_json(DRCD_DEV)["data"][:articles]):
            for p, paragraph in enumerate(article["paragraphs"]):
                name = f"answers-drcd-{a:03d}-{p:02d}.txt"
                docs.append(TextDoc(name, article["title"], paragraph["context"]))
                for qa in paragraph["qas"]:
                    gold = tuple(sorted({x["text"] for x in qa["answers"]}))
                    out.append(Question("drcd", qa["question"], gold, name, article["title"], False))
    return docs, out


class CachedEmbeddings:
    """`provider.embed` with every (kind, text) remembered on disk, installed over the real one."""

    def __init__(self) -> None:
        from django.conf import settings

        from gateway import provider

        self.provider = provider
        self.real = provider.embed
        VECTOR_DIR.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(
            f"{settings.EMBEDDING_MODEL}|{settings.EMBEDDINGS_BASE_URL}".encode()
        ).hexdigest()
        self.path = VECTOR_DIR / f"evidence-{key[:12]}.jsonl"
        self.vectors: dict[tuple[str, str], list[float]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                self.vectors[(row["k"], row["t"])] = row["v"]
        self.calls = 0
        provider.embed = self.embed  # type: ignore[assignment]

    def embed(self, texts: Sequence[str], *, kind: str, model: str | None = None) -> Any:
        missing = [t for t in dict.fromkeys(texts) if (kind, t) not in self.vectors]
        if missing:
            with self.path.open("a") as out:
                for start in range(0, len(missing), 16):
                    batch = missing[start : start + 16]
                    self.calls += 1
                    for text, vector in zip(batch, self.real(batch, kind=kind).vectors, strict=True):
                        self.vectors[(kind, text)] = vector
                        out.write(
                            json.dumps({"k": kind, "t": text, "v": [round(x, 6) for x in vector]}) + "\n"
                        )
        return self.provider.Embeddings(
            vectors=[self.vectors[(kind, t)] for t in texts],
            model=model or "cached",
            usage=self.provider.Usage(),
            latency_ms=0.0,
        )


def holds(text: str, answers: Sequence[str]) -> bool:
    from evals.graders import normalised_contains

    return any(normalised_contains(text, a) for a in answers)


def measure(
    question: Question, collection: Any, user: Any, top_k: int, drop_own: bool
) -> dict[str, Any] | None:
    """The product's selection for one question, and every unit's signals for the offline variants."""
    from assistant import evidence, pipeline
    from gateway import provider
    from knowledge import selectors

    vector = provider.embed([question.text], kind="query").vectors[0]
    hits = selectors.search(user, question.text, top_k + 1, [collection.pk], query_vector=vector)
    if drop_own:
        hits = [h for h in hits if h.document.filename != question.paragraph]
    hits = hits[:top_k]
    if not hits or (drop_own and any(holds(h.chunk.text, question.answers) for h in hits)):
        return None  # another paragraph holds the answer too: not a question the knowledge lacks
    sources = pipeline.sources_from_hits(hits, 1)
    selection = evidence.select(question.text, sources, query_vector=vector)
    shown = evidence.answer_text(selection)
    answerable = bool(question.answers) and not drop_own and not question.impossible
    # Every unit, embedded, for the signal comparisons (the product embeds only a shortlist).
    units = evidence.units_of(sources)
    evidence.rank_lexically(question.text, units)
    unit_vectors = provider.embed([u.text for u in units], kind="passage").vectors if units else []
    unit_rows = [
        {
            "lexical": u.lexical,
            "semantic": sum(a * b for a, b in zip(vector, v, strict=True)),
            "retrieval": u.source.vector_score or 0.0,
            "rank": u.source.number,
            "gold": answerable and holds(u.text, question.answers),
        }
        for u, v in zip(units, unit_vectors, strict=True)
    ]
    return {
        "dataset": question.dataset,
        "article": question.article,
        "question": question.text,
        "answers": list(question.answers),
        "sources": [{"n": s.number, "text": s.text, "vector_score": s.vector_score} for s in sources],
        "kind": "answerable"
        if answerable
        else ("unanswerable" if question.impossible else "not_in_knowledge"),
        "features": selection.features,
        "strength": selection.strength,
        "correct": answerable and holds(shown, question.answers),
        "gold_retrieved": answerable and any(holds(s.text, question.answers) for s in sources),
        "units": unit_rows,
        "latency_ms": selection.latency_ms,
    }


# --- offline analysis ------------------------------------------------------------------------


def calibration_half(article: str) -> bool:
    return int(hashlib.sha256(article.encode()).hexdigest(), 16) % 2 == 0


def variant_accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of answerable questions (gold retrieved) whose best unit holds the answer, per ranking."""
    variants = {
        "words_only": lambda u: u["lexical"],
        "embedding_only": lambda u: u["semantic"],
        "both": lambda u: u["lexical"] + 4 * u["semantic"],
        "both_and_retrieval_rank": lambda u: u["lexical"] + 4 * u["semantic"] - 0.02 * u["rank"],
        "first_sentence_of_top_chunk": lambda u: -u["rank"] - 0.001 * 0,
    }
    scored = [r for r in rows if r["kind"] == "answerable" and r["gold_retrieved"] and r["units"]]
    out: dict[str, Any] = {"questions": len(scored)}
    for name, key in variants.items():
        hits = sum(1 for r in scored if max(r["units"], key=key)["gold"])
        out[name] = {
            "top1_holds_gold": round(hits / len(scored), 3) if scored else None,
            "ci95": wilson(hits, len(scored)),
        }
    product = sum(1 for r in scored if r["correct"])
    out["product_evidence_answer"] = {
        "holds_gold": round(product / len(scored), 3) if scored else None,
        "ci95": wilson(product, len(scored)),
    }
    return out


def _auc(positives: list[float], negatives: list[float]) -> float | None:
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return round(wins / (len(positives) * len(negatives)), 3)


TARGET_CORRECT = 0.60  # of answerable questions: the evidence shown holds the answer
TARGET_WRONG_UNWARNED = 0.05  # of all answers: shown without a warning, and wrong


def calibrate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Fit the strength on the calibration half; report and choose the boundaries on the other half.

    WEAK is the highest threshold at which the evidence still holds the answer for 60% of the
    answerable questions (SQuAD and DRCD weighed equally); STRONG the lowest at which at most 5% of
    all answers (SQuAD answerable and unanswerable, DRCD, equally weighed) are shown with no
    warning and wrong. Between the two, evidence is shown with a low-confidence warning.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    def matrix(part: list[dict[str, Any]]) -> Any:
        return np.array([[r["features"].get(f, 0.0) for f in FEATURES] for r in part], dtype=float)

    train = [r for r in rows if calibration_half(r["article"])]
    test = [r for r in rows if not calibration_half(r["article"])]
    y = np.array([1 if r["correct"] else 0 for r in train])
    model = LogisticRegression(C=1.0, max_iter=5000).fit(matrix(train), y)
    coefficients = {
        **{f: round(float(c), 3) for f, c in zip(FEATURES, model.coef_[0], strict=True)},
        "bias": round(float(model.intercept_[0]), 3),
    }
    strength = model.predict_proba(matrix(test))[:, 1]

    def group(dataset: str, kind: str) -> list[int]:
        return [i for i, r in enumerate(test) if r["dataset"] == dataset and r["kind"] == kind]

    groups = {
        "squad_answerable": group("squad", "answerable"),
        "squad_unanswerable": group("squad", "unanswerable"),
        "squad_not_in_knowledge": group("squad", "not_in_knowledge"),
        "drcd_answerable": group("drcd", "answerable"),
        "drcd_not_in_knowledge": group("drcd", "not_in_knowledge"),
    }

    def at(threshold: float) -> dict[str, Any]:
        row: dict[str, Any] = {"threshold": round(threshold, 2)}
        for name, idx in groups.items():
            shown = [i for i in idx if strength[i] >= threshold]
            if name.endswith("answerable") and not name.endswith("unanswerable"):
                right = sum(1 for i in shown if test[i]["correct"])
                row[name] = {
                    "answered_correctly": round(right / len(idx), 3) if idx else None,
                    "ci95": wilson(right, len(idx)),
                    "shown_wrong": round((len(shown) - right) / len(idx), 3) if idx else None,
                    "n": len(idx),
                }
            else:
                row[name] = {
                    "answered_anyway": round(len(shown) / len(idx), 3) if idx else None,
                    "ci95": wilson(len(shown), len(idx)),
                    "n": len(idx),
                }
        row["answerable_correct_mean"] = round(
            (row["squad_answerable"]["answered_correctly"] + row["drcd_answerable"]["answered_correctly"])
            / 2,
            3,
        )
        row["wrong_unwarned_pooled"] = round(
            (
                row["squad_answerable"]["shown_wrong"]
                + row["squad_unanswerable"]["answered_anyway"]
                + row["drcd_answerable"]["shown_wrong"]
            )
            / 3,
            3,
        )
        return row

    table = [at(t) for t in np.arange(0.20, 0.825, 0.05)]
    weak = max(
        (r["threshold"] for r in table if r["answerable_correct_mean"] >= TARGET_CORRECT), default=None
    )
    strong = min(
        (r["threshold"] for r in table if r["wrong_unwarned_pooled"] <= TARGET_WRONG_UNWARNED), default=None
    )

    def scores(name: str) -> list[float]:
        return [float(strength[i]) for i in groups[name]]

    right = [
        float(strength[i])
        for i in groups["squad_answerable"] + groups["drcd_answerable"]
        if test[i]["correct"]
    ]
    return {
        "features": list(FEATURES),
        "coefficients": coefficients,
        "calibration_questions": len(train),
        "held_out_questions": len(test),
        "held_out_auc": {
            "correct_vs_everything_else": _auc(
                [float(strength[i]) for i in range(len(test)) if test[i]["correct"]],
                [float(strength[i]) for i in range(len(test)) if not test[i]["correct"]],
            ),
            "squad_answerable_vs_squad_unanswerable": _auc(
                scores("squad_answerable"), scores("squad_unanswerable")
            ),
            "answered_correctly_vs_not_in_knowledge": _auc(
                right, scores("squad_not_in_knowledge") + scores("drcd_not_in_knowledge")
            ),
        },
        "chosen": {"weak": weak, "strong": strong, "rule": calibrate.__doc__.split("\n\n")[1].strip()},
        "at_weak": at(weak) if weak is not None else None,
        "at_strong": at(strong) if strong is not None else None,
        "held_out": table,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--articles-squad", type=int, default=4)
    parser.add_argument("--articles-drcd", type=int, default=40)
    parser.add_argument("--max-questions", type=int, default=0, help="per dataset; 0: all")
    parser.add_argument("--rows", help="write every question's measurements as JSON lines to this file")
    parser.add_argument("--out")
    args = parser.parse_args()
    setup_django()
    from assistant import services

    cache = CachedEmbeddings()
    user = bench_superuser()
    top_k = services.assistant_default().top_k
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for dataset, articles in (("squad", args.articles_squad), ("drcd", args.articles_drcd)):
        docs, asked = questions(dataset, articles)
        collection = index(f"bench-answers-{dataset}", docs)
        if args.max_questions:
            asked = asked[: args.max_questions]
        for i, question in enumerate(asked, start=1):
            for drop_own in (False, True) if not question.impossible else (False,):
                row = measure(question, collection, user, top_k, drop_own)
                if row is not None:
                    rows.append(row)
            if i % 50 == 0 or i == len(asked):
                log(f"{dataset}: {i}/{len(asked)} questions, {time.perf_counter() - started:.0f} s")
    if args.rows:
        Path(args.rows).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    latencies = sorted(r["latency_ms"] for r in rows)
    emit(
        {
            "benchmark": "evidence",
            "environment": environment(),
            "datasets": CITATIONS,
            "top_k": top_k,
            "selection": {
                d: variant_accuracy([r for r in rows if r["dataset"] == d]) for d in ("squad", "drcd")
            },
            "calibration": calibrate(rows),
            "selection_latency_ms_p50_cached_embeddings": latencies[len(latencies) // 2]
            if latencies
            else None,
            "embedding_requests": cache.calls,
            "duration_s": round(time.perf_counter() - started, 1),
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
