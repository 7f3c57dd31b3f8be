"""The router's classifier: its labelled data, a deterministic split, and a small logistic fit.

No public dataset labels questions as "needs the strong model". The nearest usable signal in the
shared datasets is COVID-QA (deepset, Apache-2.0, `covid-qa/200423_covidQA.json`): annotators
marked the answer span in long scientific articles, and the length of that span says how much
the answer has to gather and explain. A question whose answer runs past LONG_ANSWER_WORDS words
is labelled "strong" (a synthesised answer), a shorter one "cheap" (a lookup). SQuAD is left
out on purpose: its spans are short by design (median 2 words), so adding it would teach the
classifier to tell the two datasets apart rather than easy from hard questions.

This is a proxy, and a weak one: `manage.py train_router` prints the held-out accuracy and AUC
next to the majority baseline. Retrieval confidence is not in the data; the router uses it as a
rule with a threshold (RoutingPolicy.min_retrieval_score), not as a fitted weight.

Training only (`manage.py train_router`, bench/routing.py, tests): scikit-learn fits; the
router (routing/policy.py) reads the exported weights and never imports scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score

from routing.features import VECTOR_NAMES, question_features
from routing.policy import CLASSIFIER_PATH as CLASSIFIER_PATH  # where train_router writes

LONG_ANSWER_WORDS = 10
HELD_OUT_PERCENT = 30
SPLIT_SALT = "groundwork-routing-v1"
L2 = 1.0


@dataclass(frozen=True)
class Row:
    question: str
    answer_words: int

    @property
    def label(self) -> int:
        return int(self.answer_words > LONG_ANSWER_WORDS)

    @property
    def split(self) -> str:
        key = " ".join(self.question.lower().split())
        digest = hashlib.sha256(f"{SPLIT_SALT}:{key}".encode()).hexdigest()
        return "test" if int(digest[:8], 16) % 100 < HELD_OUT_PERCENT else "train"


def covid_qa(root: Path) -> list[Row]:
    data = json.loads((root / "covid-qa" / "200423_covidQA.json").read_text(encoding="utf-8"))
    seen: dict[str, Row] = {}
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                question = " ".join(qa["question"].split())
                answers = qa.get("answers") or []
                if question and answers and question not in seen:
                    seen[question] = Row(question, len(answers[0]["text"].split()))
    return list(seen.values())


def _matrix(rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([question_features(r.question).vector() for r in rows], dtype=float)
    y = np.array([r.label for r in rows], dtype=float)
    return x, y


def fit(x: np.ndarray, y: np.ndarray, *, l2: float = L2) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression (scikit-learn, Newton-Cholesky from zero: deterministic).

    scikit-learn minimises C·Σ lossᵢ + ½‖w‖² with the bias unpenalised: Σ lossᵢ + l2/2·‖w‖² at C = 1/l2.
    """
    regression = LogisticRegression(C=1.0 / l2, solver="newton-cholesky", tol=1e-10, max_iter=100)
    regression.fit(x, y)
    return regression.coef_[0].copy(), float(regression.intercept_[0])


def train(root: Path) -> dict[str, Any]:
    """Fit on the train split, report on the held-out split; returns the classifier file's content."""
    rows = covid_qa(root)
    train_rows = [r for r in rows if r.split == "train"]
    test_rows = [r for r in rows if r.split == "test"]
    x, y = _matrix(train_rows)
    weights, bias = fit(x, y)
    tx, ty = _matrix(test_rows)
    scores = 1 / (1 + np.exp(-(tx @ weights + bias)))
    accuracy = float(accuracy_score(ty == 1, scores >= 0.5))
    majority = float(max(ty.mean(), 1 - ty.mean()))
    digest = hashlib.sha256("\n".join(f"{r.question}\t{r.label}" for r in rows).encode()).hexdigest()
    area = roc_auc_score(ty, scores) if 0 < ty.sum() < len(ty) else None
    return {
        "version": 1,
        "features": VECTOR_NAMES,
        "weights": [round(float(v), 6) for v in weights],
        "bias": round(bias, 6),
        "label": f"strong = the gold answer is longer than {LONG_ANSWER_WORDS} words",
        "dataset": "COVID-QA (deepset, Apache-2.0), covid-qa/200423_covidQA.json",
        "data_sha256": digest,
        "metrics": {
            "train": len(train_rows),
            "test": len(test_rows),
            "test_strong_share": round(float(ty.mean()), 4),
            "test_accuracy": round(accuracy, 4),
            "test_majority_baseline": round(majority, 4),
            "test_auc": None if area is None else round(area, 4),
        },
    }
