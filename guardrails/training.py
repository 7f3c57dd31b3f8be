"""Fitting the guardrail classifiers: scikit-learn, exported to the numpy model files.

Training only (`manage.py train_guardrails`, `bench/guardrails.py`, tests): the runtime reads
the exported weights with guardrails/classifier.py and never imports scikit-learn. The data and
its split are guardrails/training_data.py; query embeddings are cached here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve, precision_recall_fscore_support
from sklearn.model_selection import PredefinedSplit
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from guardrails.classifier import LogisticModel, data_hash
from guardrails.training_data import (
    BENIGN,
    DNA_CATEGORIES,
    HARM_CATEGORIES,
    HELD_OUT_PERCENT,
    INJECTION,
    SPLIT_SALT,
    Corpus,
    Row,
    SoundsHarmful,
    clinc_queries,
    covid_qa_questions,
    do_not_answer,
    drcd_questions,
    handwritten,
    prompt_injections,
    sounds_harmful,
    sounds_harmful_records,
    split_of,
    squad_paragraphs,
    squad_questions,
    subsample,
    training_corpus,
)

__all__ = [
    "BENIGN",
    "DNA_CATEGORIES",
    "HARM_CATEGORIES",
    "HELD_OUT_PERCENT",
    "INJECTION",
    "SPLIT_SALT",
    "Corpus",
    "EmbeddingCache",
    "Fitted",
    "Row",
    "SoundsHarmful",
    "clinc_queries",
    "covid_qa_questions",
    "default_cache_path",
    "do_not_answer",
    "drcd_questions",
    "fit",
    "fit_harm",
    "fit_injection",
    "handwritten",
    "harm_scores",
    "injection_scores",
    "prf",
    "prompt_injections",
    "rate",
    "sounds_harmful",
    "sounds_harmful_records",
    "split_of",
    "squad_paragraphs",
    "squad_questions",
    "subsample",
    "training_corpus",
]


# --- embeddings ---------------------------------------------------------------------------------


class EmbeddingCache:
    """Vectors by (model, text), kept in one .npz file outside the repository.

    Holds public dataset text only; the embedded text is the sanitised one the checks embed.
    """

    def __init__(self, path: Path, model: str) -> None:
        self.path = path
        self.model = model
        self.vectors: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                for key, vector in zip(data["keys"].tolist(), data["vectors"], strict=True):
                    self.vectors[str(key)] = vector

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model}\n{text}".encode()).hexdigest()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.vectors)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(
            tmp, keys=np.array(keys), vectors=np.array([self.vectors[k] for k in keys], dtype=np.float32)
        )
        tmp.replace(self.path)

    def embed(
        self,
        texts: Sequence[str],
        embed: Callable[[list[str]], list[list[float]]],
        *,
        batch: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Vectors for `texts` in order, computing (and saving) only the missing ones."""
        missing = list(dict.fromkeys(t for t in texts if self.key(t) not in self.vectors))
        for start in range(0, len(missing), batch):
            chunk = missing[start : start + batch]
            for text, vector in zip(chunk, embed(chunk), strict=True):
                self.vectors[self.key(text)] = np.asarray(vector, dtype=np.float32)
            if progress:
                progress(min(start + batch, len(missing)), len(missing))
            if (start // batch) % 10 == 9:
                self.save()
        if missing:
            self.save()
        if not texts:
            return np.zeros((0, 0), dtype=np.float64)
        return np.vstack([self.vectors[self.key(t)] for t in texts]).astype(np.float64)


def default_cache_path(data_dir: Path, model: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model)
    return data_dir / "cache" / "guardrails" / f"embeddings-{safe}.npz"


# --- fitting -------------------------------------------------------------------------------------

FOLDS = 5
L2_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
# Share of the benign weight per source: the hard negatives (benign prompts of the injection
# set, the hand-written scary-but-benign rows) count for more than their numbers.
HARM_BENIGN_SHARES = {
    "clinc150": 0.15,
    "squad": 0.15,
    "prompt-injections": 0.15,
    "handwritten": 0.1,
    "sounds-harmful": 0.2,
    "drcd": 0.1,
    "covid-qa": 0.15,
}
INJECTION_NEGATIVE_SHARES = {
    "prompt-injections": 0.4,
    "do-not-answer": 0.15,
    "squad": 0.08,
    "clinc150": 0.08,
    "handwritten": 0.04,
    "sounds-harmful": 0.1,
    "drcd": 0.1,
    "covid-qa": 0.05,
}
HARM_MAX_BENIGN_FPR = 0.015
HARM_MAX_HARD_NEGATIVE_FPR = 1.0  # on the safe rows of sounds_harmful.jsonl (out of fold)
INJECTION_MAX_OTHER_FPR = 0.01


def fold_of(text: str) -> int:
    return int(hashlib.sha256(f"{SPLIT_SALT}:fold:{text}".encode()).hexdigest()[:8], 16) % FOLDS


def fit(
    vectors: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[str],
    *,
    classes: Sequence[str] | None = None,
    sample_weight: Sequence[float] | np.ndarray | None = None,
    l2: float = 1e-3,
) -> LogisticModel:
    """Softmax regression minimising mean weighted cross-entropy + l2/2·‖W‖², exported for numpy.

    Features are standardised first (e5 vectors share a large common direction). scikit-learn's
    lbfgs from zero weights is deterministic; its objective is C·Σ wᵢ·lossᵢ + ½‖W‖², the same
    as ours with the weights summing to one and C = 1/l2. Two classes are fitted as one sigmoid,
    whose ½‖w‖² matches the two-column softmax's l2/2·(‖w/2‖² + ‖w/2‖²) at C = 2/l2.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(labels) or len(x) == 0:
        raise ValueError("need a 2-D array of vectors and one label per vector")
    names = list(classes) if classes is not None else sorted(set(labels))
    if any(label not in names for label in labels):
        raise ValueError("a label is not among the classes")
    w = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    scaler = StandardScaler().fit(x)
    binary = len(set(labels)) == 2
    regression = LogisticRegression(C=(2.0 if binary else 1.0) / l2, tol=1e-8, max_iter=5000)
    # The matrices are small: on a busy machine BLAS threads mostly wait for each other.
    with threadpool_limits(limits=1, user_api="blas"):
        regression.fit(scaler.transform(x), list(labels), sample_weight=w / w.sum())
    coef, intercept = regression.coef_, regression.intercept_
    if binary:
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.r_[-intercept / 2, intercept / 2]
    weights, bias = np.zeros((x.shape[1], len(names))), np.zeros(len(names))
    for row, name in enumerate(regression.classes_):
        weights[:, names.index(str(name))], bias[names.index(str(name))] = coef[row], intercept[row]
    # A class absent from the rows keeps zero weights and a bias that makes it improbable.
    bias[[i for i, name in enumerate(names) if name not in set(labels)]] = -60.0
    return LogisticModel(classes=names, weights=weights, bias=bias, mean=scaler.mean_, scale=scaler.scale_)


def _weights(
    rows: Sequence[Row], positive: Callable[[Row], bool], negative_shares: dict[str, float]
) -> np.ndarray:
    """Half the weight on positives (uniform), half on negatives split by source share."""
    weights = np.zeros(len(rows))
    positives = [i for i, r in enumerate(rows) if positive(r)]
    weights[positives] = 0.5 / max(1, len(positives))
    for source, share in negative_shares.items():
        members = [i for i, r in enumerate(rows) if not positive(r) and r.source == source]
        weights[members] = 0.5 * share / max(1, len(members))
    leftover = [i for i, r in enumerate(rows) if weights[i] == 0]
    weights[leftover] = 0.5 / max(1, len(rows))
    return weights


def _out_of_fold(
    x: np.ndarray, labels: list[str], weights: np.ndarray, texts: list[str], classes: list[str], l2: float
) -> np.ndarray:
    """Each row's probabilities from the model fitted on the other folds (folds: hashes of the text)."""
    probabilities = np.zeros((len(x), len(classes)))
    for train, test in PredefinedSplit([fold_of(t) for t in texts]).split():
        model = fit(
            x[train], [labels[i] for i in train], classes=classes, sample_weight=weights[train], l2=l2
        )
        probabilities[test] = model.predict_proba(x[test])
    return probabilities


def prf(predicted: Sequence[bool], actual: Sequence[bool]) -> dict[str, Any]:
    p, a = np.asarray(predicted, dtype=bool), np.asarray(actual, dtype=bool)
    precision, recall, f1, _ = precision_recall_fscore_support(
        a, p, average="binary", pos_label=True, zero_division=0.0
    )
    return {
        "precision": round(float(precision), 4),
        "recall": round(float(recall), 4),
        "f1": round(float(f1), 4),
        "tp": int((p & a).sum()),
        "fp": int((p & ~a).sum()),
        "fn": int((~p & a).sum()),
        "n": len(a),
    }


def rate(flags: Sequence[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else 0.0


@dataclass
class Fitted:
    model: LogisticModel
    metrics: dict[str, object]


def harm_scores(probabilities: np.ndarray, classes: list[str], texts: Sequence[str]) -> np.ndarray:
    """The inference-time harm score from classifier probabilities: rules and benign senses applied."""
    from guardrails import harm
    from guardrails.input_checks import BENIGN_SENSE_FACTOR
    from guardrails.normalize import normalize

    benign = classes.index(BENIGN)
    scores = 1 - probabilities[:, benign]
    for i, text in enumerate(texts):
        normalized = normalize(text)
        hits = harm.rule_hits(normalized.all_texts)
        ranked = [(p, c) for p, c in zip(probabilities[i], classes, strict=True) if c != BENIGN]
        benign_sense = harm.benign_sense(normalized.text) and not any(h.action == harm.BLOCK for h in hits)
        record = max(ranked)[1] == "privacy" and harm.record_question(normalized.text)
        if benign_sense or record:  # as input_checks.dampen does
            scores[i] *= BENIGN_SENSE_FACTOR
        if hits:
            scores[i] = max(scores[i], 0.9)
    return scores


def injection_scores(probabilities: np.ndarray, classes: list[str], texts: Sequence[str]) -> np.ndarray:
    from guardrails import injection
    from guardrails.normalize import normalize

    clf = probabilities[:, classes.index(INJECTION)]
    rules = np.array([injection.rule_score(injection.rule_hits(normalize(t).all_texts)) for t in texts])
    return 1 - (1 - rules) * (1 - clf)


def fit_harm(rows: Sequence[Row], x: np.ndarray) -> Fitted:
    """The harm model on the train rows: l2 and threshold chosen on out-of-fold predictions."""
    labels = [r.harm for r in rows]
    texts = [r.text for r in rows]
    classes = [BENIGN, *HARM_CATEGORIES]
    weights = _weights(rows, lambda r: r.harm != BENIGN, HARM_BENIGN_SHARES)
    harmful = np.array([r.harm != BENIGN for r in rows])
    hard = np.array([r.harm == BENIGN and r.source == "sounds-harmful" for r in rows])
    best: tuple[float, float, float, np.ndarray] | None = None
    search = []
    for l2 in L2_GRID:
        scores = harm_scores(_out_of_fold(x, labels, weights, texts, classes, l2), classes, texts)
        threshold = _threshold_for_fpr(scores[~harmful], HARM_MAX_BENIGN_FPR)
        if hard.any():
            # The hard negatives are few among thousands of easy ones: they get a bound of their own.
            threshold = max(threshold, _threshold_for_fpr(scores[hard], HARM_MAX_HARD_NEGATIVE_FPR))
        recall = float((scores[harmful] >= threshold).mean())
        search.append({"l2": l2, "threshold": round(threshold, 4), "oof_recall": round(recall, 4)})
        if best is None or recall > best[0]:
            best = (recall, l2, threshold, scores)
    assert best is not None
    _, l2, threshold, scores = best
    model = fit(x, labels, classes=classes, sample_weight=weights, l2=l2)
    oof = {
        "harmful_recall": round(float((scores[harmful] >= threshold).mean()), 4),
        "benign_fpr": {
            source: rate(
                [
                    bool(s >= threshold)
                    for s, r in zip(scores, rows, strict=True)
                    if r.source == source and r.harm == BENIGN
                ]
            )
            for source in sorted({r.source for r in rows if r.harm == BENIGN})
        },
    }
    # The trade-off an assistant makes when it sets its own harm_threshold.
    benign_sources = sorted({r.source for r in rows if r.harm == BENIGN})
    oof["curve"] = [
        {
            "threshold": t,
            "harmful_recall": round(float((scores[harmful] >= t).mean()), 4),
            "benign_fpr": {
                source: rate([bool(s >= t) for s, r in zip(scores, rows, strict=True) if r.source == source])
                for source in benign_sources
            },
        }
        for t in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    ]
    model.meta.update(
        {
            "threshold": round(threshold, 4),
            "l2": l2,
            "data_hash": data_hash(texts, labels),
            "train_rows": {c: labels.count(c) for c in classes},
            "metrics": {"out_of_fold": oof, "search": search},
        }
    )
    return Fitted(model, {"out_of_fold": oof, "search": search})


def fit_injection(rows: Sequence[Row], x: np.ndarray) -> Fitted:
    labels = [INJECTION if r.injection else BENIGN for r in rows]
    texts = [r.text for r in rows]
    classes = [BENIGN, INJECTION]
    weights = _weights(rows, lambda r: bool(r.injection), INJECTION_NEGATIVE_SHARES)
    in_set = np.array([r.source == "prompt-injections" for r in rows])
    actual = np.array([bool(r.injection) for r in rows])
    best: tuple[float, float, float, np.ndarray] | None = None
    search = []
    for l2 in L2_GRID:
        scores = injection_scores(_out_of_fold(x, labels, weights, texts, classes, l2), classes, texts)
        floor = _threshold_for_fpr(scores[~in_set & ~actual], INJECTION_MAX_OTHER_FPR)
        threshold, f1 = _best_f1_threshold(scores[in_set], actual[in_set], floor)
        search.append({"l2": l2, "threshold": round(threshold, 4), "oof_f1": round(f1, 4)})
        if best is None or f1 > best[0]:
            best = (f1, l2, threshold, scores)
    assert best is not None
    _, l2, threshold, scores = best
    model = fit(x, labels, classes=classes, sample_weight=weights, l2=l2)
    oof = {
        "injection_set": prf(list(scores[in_set] >= threshold), list(actual[in_set])),
        "other_benign_fpr": {
            source: rate(
                [bool(s >= threshold) for s, r in zip(scores, rows, strict=True) if r.source == source]
            )
            for source in sorted({r.source for r in rows if r.source != "prompt-injections"})
        },
    }
    model.meta.update(
        {
            "threshold": round(threshold, 4),
            "l2": l2,
            "data_hash": data_hash(texts, labels),
            "train_rows": {c: labels.count(c) for c in classes},
            "metrics": {"out_of_fold": oof, "search": search},
        }
    )
    return Fitted(model, {"out_of_fold": oof, "search": search})


def _threshold_for_fpr(negative_scores: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold whose false-positive rate on these negatives is at most `max_fpr`."""
    if len(negative_scores) == 0:
        return 0.5
    ordered = np.sort(negative_scores)[::-1]
    allowed = int(np.floor(max_fpr * len(ordered)))
    # Scores strictly above the (allowed+1)-th highest negative are flagged.
    return float(min(0.99, np.nextafter(ordered[allowed], 1.0))) if allowed < len(ordered) else 0.0


def _best_f1_threshold(scores: np.ndarray, actual: np.ndarray, floor: float) -> tuple[float, float]:
    """The lowest threshold at or above `floor` with the best F1 (at `floor` itself when none is above)."""
    precision, recall, thresholds = precision_recall_curve(actual, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0
    )
    allowed = thresholds >= floor
    if not allowed.any():
        return floor, prf(list(scores >= floor), list(actual))["f1"]
    best = int(np.flatnonzero(allowed)[np.argmax(f1[allowed])])
    return float(thresholds[best]), round(float(f1[best]), 4)
