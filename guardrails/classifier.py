"""A small multinomial logistic regression over embeddings, in numpy.

Trained by full-batch Nesterov gradient descent on standardised features with L2 weight decay:
no randomness at all, so the same rows give the same model file byte for byte. Saved as JSON
(weights rounded to 6 significant digits) with the embedding model it belongs to, a hash of
its training data, its decision threshold and its metrics, so a model file explains itself.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
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
            # busy machine cost tens of milliseconds.
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


@cache
def _openblas() -> tuple[Any, Any] | None:
    """numpy's bundled OpenBLAS thread setters, or None when they cannot be found."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("lib*openblas*.so*")):
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", "", "_64"):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    return setter, getter
    return None


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run numpy's BLAS on one thread for a while.

    The training matrices are small: on a busy machine OpenBLAS's threads mostly wait for
    each other, and a fit took 20 times longer with two threads than with one.
    """
    functions = _openblas()
    if functions is None:
        yield
        return
    setter, getter = functions
    previous = int(getter())
    setter(1)
    try:
        yield
    finally:
        setter(previous)


def _largest_eigenvalue(matrix: Array, iterations: int = 200) -> float:
    """Power iteration from a fixed start, with a little headroom (an upper estimate is safe)."""
    vector = np.ones(matrix.shape[0]) / np.sqrt(matrix.shape[0])
    value = 0.0
    for _ in range(iterations):
        product = matrix @ vector
        norm = float(np.linalg.norm(product))
        if norm == 0.0:
            return 0.0
        vector = product / norm
        if abs(norm - value) <= 1e-9 * norm:
            break
        value = norm
    return 1.05 * norm


def fit(
    vectors: Sequence[Sequence[float]] | Array,
    labels: Sequence[str],
    *,
    classes: Sequence[str] | None = None,
    sample_weight: Sequence[float] | Array | None = None,
    l2: float = 1e-3,
    iterations: int = 600,
    tolerance: float = 1e-7,
) -> LogisticModel:
    """Fit softmax regression minimising mean weighted cross-entropy + l2/2·‖W‖².

    Deterministic: full-batch Nesterov gradient descent from zero weights, step size from a
    bound on the loss's curvature. Features are standardised first (e5 vectors share a large
    common direction, which would otherwise slow the descent down badly).
    """
    with single_blas_thread():
        return _fit(vectors, labels, classes, sample_weight, l2, iterations, tolerance)


def _fit(
    vectors: Sequence[Sequence[float]] | Array,
    labels: Sequence[str],
    classes: Sequence[str] | None,
    sample_weight: Sequence[float] | Array | None,
    l2: float,
    iterations: int,
    tolerance: float,
) -> LogisticModel:
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(labels) or len(x) == 0:
        raise ValueError("need a 2-D array of vectors and one label per vector")
    names = list(classes) if classes is not None else sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    if any(label not in index for label in labels):
        raise ValueError("a label is not among the classes")
    y = np.zeros((len(x), len(names)))
    y[np.arange(len(x)), [index[label] for label in labels]] = 1.0
    w = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    w = w / w.sum()

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    xs = (x - mean) / scale
    xb = np.hstack([xs, np.ones((len(xs), 1))])  # the bias as a last, unregularised feature

    # Curvature bound of the weighted softmax loss: 0.5·λmax(Xᵀ diag(w) X) + l2.
    gram = xb.T @ (xb * w[:, None])
    lipschitz = 0.5 * _largest_eigenvalue(gram) + l2
    step = 1.0 / lipschitz
    mask = np.ones((xb.shape[1], 1))
    mask[-1] = 0.0

    theta = np.zeros((xb.shape[1], len(names)))
    velocity = theta.copy()
    previous_loss = np.inf
    for t in range(1, iterations + 1):
        look = theta + (t - 1) / (t + 2) * velocity
        p = _softmax(xb @ look)
        grad = xb.T @ ((p - y) * w[:, None]) + l2 * look * mask
        new_theta = look - step * grad
        velocity = new_theta - theta
        theta = new_theta
        if t % 25 == 0:
            p = _softmax(xb @ theta)
            loss = float(-(w * np.log(np.clip((p * y).sum(axis=1), 1e-12, None))).sum())
            loss += 0.5 * l2 * float((theta[:-1] ** 2).sum())
            if previous_loss - loss < tolerance:
                break
            previous_loss = loss
    return LogisticModel(
        classes=names, weights=theta[:-1].copy(), bias=theta[-1].copy(), mean=mean, scale=scale
    )
