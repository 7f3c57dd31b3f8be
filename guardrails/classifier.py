"""A small multinomial logistic regression over embeddings, at inference: numpy over exported weights.

Fitted by scikit-learn in the training code only (guardrails/training.py `fit`, deterministic,
so the same rows give the same model file). Saved as JSON (weights rounded to 6 significant
digits) with the embedding model it belongs to, a hash of its training data, its decision
threshold and its metrics, so a model file explains itself. The runtime never imports
scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT_VERSION = 1
Array = npt.NDArray[np.float64]


def data_hash(texts: Sequence[str], labels: Sequence[str]) -> str:
    """A fingerprint of the training rows, independent of their order."""
    digest = hashlib.sha256()
    for text, label in sorted(zip(texts, labels, strict=True)):
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()


def _softmax(z: Array) -> Array:
    # Clipped so confident rows never produce subnormal floats, which are 100x slower to compute with.
    z = np.maximum(z - z.max(axis=1, keepdims=True), -60.0)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class LogisticModel:
    """Classes, weights and the standardisation they were fitted on."""

    classes: list[str]
    weights: Array  # (features, classes)
    bias: Array  # (classes,)
    mean: Array  # (features,)
    scale: Array  # (features,)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dims(self) -> int:
        return int(self.weights.shape[0])

    def predict_proba(self, vectors: Sequence[Sequence[float]] | Array) -> Array:
        """Class probabilities, one row per vector, columns in `classes` order."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[1] != self.dims:
            raise ValueError(f"expected vectors of {self.dims} dimensions, got {x.shape[1]}")
        standardised = (x - self.mean) / self.scale
        if len(x) <= 16:
            # einsum's own loops, not BLAS: a few rows need no threads, and waiting for them on a
            # busy machine cost tens of milliseconds (docs/benchmarks-guardrails.md, "Figures
            # quoted in the code").
            return _softmax(np.einsum("nf,fc->nc", standardised, self.weights) + self.bias)
        return _softmax(standardised @ self.weights + self.bias)

    def proba_of(self, vector: Sequence[float], label: str) -> float:
        return float(self.predict_proba([vector])[0, self.classes.index(label)])

    # --- persistence ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        def rounded(values: Array) -> list[Any]:
            return json.loads(json.dumps(np.vectorize(lambda v: float(f"{v:.6g}"))(values).tolist()))

        return {
            "format_version": FORMAT_VERSION,
            "kind": "multinomial_logistic_regression",
            **self.meta,
            "classes": self.classes,
            "dims": self.dims,
            "mean": rounded(self.mean),
            "scale": rounded(self.scale),
            "bias": rounded(self.bias),
            "weights": rounded(self.weights),
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogisticModel:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported model format {data.get('format_version')!r}")
        known = {"format_version", "kind", "classes", "dims", "mean", "scale", "bias", "weights"}
        model = cls(
            classes=list(data["classes"]),
            weights=np.asarray(data["weights"], dtype=np.float64),
            bias=np.asarray(data["bias"], dtype=np.float64),
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
            meta={k: v for k, v in data.items() if k not in known},
        )
        if model.weights.shape != (int(data["dims"]), len(model.classes)):
            raise ValueError("model weights do not match its classes and dimensions")
        return model

    @classmethod
    def load(cls, path: Path) -> LogisticModel:
        return cls.from_json(json.loads(path.read_text()))
