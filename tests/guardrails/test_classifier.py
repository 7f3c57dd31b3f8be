"""The numpy logistic regression on synthetic, separable data; the shipped model files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from guardrails import checks
from guardrails.classifier import LogisticModel, data_hash
from guardrails.training import fit


def blobs(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = {"a": np.r_[np.ones(8), np.zeros(8)], "b": np.r_[np.zeros(8), np.ones(8)], "c": -np.ones(16)}
    x = np.vstack([rng.normal(c, 0.3, (40, 16)) for c in centres.values()])
    return x, [label for label in centres for _ in range(40)]


def test_fit_separates_separable_classes() -> None:
    x, y = blobs()
    model = fit(x, y, l2=1e-3)
    predicted = np.array(model.classes)[model.predict_proba(x).argmax(axis=1)]
    assert (predicted == np.array(y)).all()
    assert np.allclose(model.predict_proba(x).sum(axis=1), 1.0)


def test_binary_probabilities_follow_the_evidence() -> None:
    x = np.array([[i / 10, 0.0] for i in range(-10, 11)])
    y = ["neg" if i < 0 else "pos" for i in range(-10, 11)]
    model = fit(x, y, l2=1e-2)
    assert model.proba_of([1.0, 0.0], "pos") > 0.9
    assert model.proba_of([-1.0, 0.0], "pos") < 0.1


def test_fit_is_deterministic() -> None:
    x, y = blobs()
    first, second = fit(x, y), fit(x, y)
    assert json.dumps(first.to_json()) == json.dumps(second.to_json())


def test_sample_weights_move_the_boundary() -> None:
    x = np.array([[-1.0], [-0.5], [0.5], [1.0]])
    y = ["neg", "neg", "pos", "pos"]
    even = fit(x, y, l2=1e-1).proba_of([0.0], "pos")
    heavy = fit(x, y, l2=1e-1, sample_weight=[1, 1, 5, 5]).proba_of([0.0], "pos")
    assert heavy > even


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    x, y = blobs()
    model = fit(x, y)
    model.meta.update({"version": "test-1", "threshold": 0.4})
    path = tmp_path / "model.json"
    model.save(path)
    loaded = LogisticModel.load(path)
    assert loaded.meta["version"] == "test-1"
    assert np.abs(loaded.predict_proba(x) - model.predict_proba(x)).max() < 1e-4


def test_wrong_dimensions_and_formats_are_refused(tmp_path: Path) -> None:
    x, y = blobs()
    model = fit(x, y)
    with pytest.raises(ValueError, match="dimensions"):
        model.predict_proba([[0.0, 1.0]])
    data = model.to_json()
    data["format_version"] = 99
    with pytest.raises(ValueError, match="format"):
        LogisticModel.from_json(data)
    with pytest.raises(ValueError):
        fit(x, y[:-1])


def test_data_hash_ignores_order_but_not_content() -> None:
    assert data_hash(["a", "b"], ["x", "y"]) == data_hash(["b", "a"], ["y", "x"])
    assert data_hash(["a", "b"], ["x", "y"]) != data_hash(["a", "b"], ["y", "x"])


@pytest.mark.parametrize("name", ["harm.json", "injection.json"])
def test_shipped_model_files_are_small_and_explain_themselves(name: str) -> None:
    path = checks.DATA_DIR / name
    assert path.stat().st_size < 200_000
    model = LogisticModel.load(path)
    for key in ("version", "embedding_model", "data_hash", "threshold", "metrics", "split", "train_rows"):
        assert key in model.meta, key
    assert "held_out" in model.meta["metrics"]
    assert model.classes[0] == "benign"


def test_the_runtime_never_imports_scikit_learn() -> None:
    """Training fits with scikit-learn (a development dependency); serving reads numpy weights."""
    code = (
        "import sys, django; django.setup(); import config.urls, guardrails.checks, routing.policy; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'sklearn', 'threadpoolctl'}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
