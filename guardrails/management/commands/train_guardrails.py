"""`manage.py train_guardrails`: fit the harm and injection classifiers and write their model files.

Reproducible: the split and the folds are hashes of the text, the fit is deterministic, and the
model files carry a hash of their training rows. Embeddings are cached under DATA_DIR, so a
second run only fits. Prints one JSON object with the metrics; see guardrails/training.py for
the data sources and the split.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway import provider
from guardrails import checks, training
from guardrails.classifier import LogisticModel

MODEL_VERSION = 2


class Command(BaseCommand):
    help = "Train the guardrail classifiers on the train split of the public datasets; print metrics JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--datasets",
            default=str(Path(settings.BASE_DIR).parent / "shared" / "datasets"),
            help="The shared datasets folder (default: ../shared/datasets).",
        )
        parser.add_argument(
            "--out", default=str(checks.DATA_DIR), help="Where to write harm.json and injection.json."
        )
        parser.add_argument(
            "--cache", help="Embedding cache file (default: under DATA_DIR/cache/guardrails)."
        )
        parser.add_argument("--clinc", type=int, default=2000, help="CLINC150 rows to train on (train part).")
        parser.add_argument(
            "--squad", type=int, default=1500, help="SQuAD questions to train on (train part)."
        )
        parser.add_argument("--drcd", type=int, default=1000, help="DRCD questions to train on (train part).")
        parser.add_argument(
            "--covid", type=int, default=1000, help="COVID-QA questions to train on (train part)."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Fit and report, but write no model files."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        root = Path(options["datasets"])
        if not (root / "do-not-answer").is_dir():
            raise CommandError(f"{root} does not look like the shared datasets folder (no do-not-answer/).")
        model_name = settings.EMBEDDING_MODEL
        cache_path = (
            Path(options["cache"])
            if options["cache"]
            else training.default_cache_path(Path(settings.DATA_DIR), model_name)
        )
        corpus = training.training_corpus(
            root, clinc=options["clinc"], squad=options["squad"], drcd=options["drcd"], covid=options["covid"]
        )
        vectors, embed_seconds = _embed(corpus, training.EmbeddingCache(cache_path, model_name))
        index = {r.text: i for i, r in enumerate(corpus.rows)}

        def matrix(rows: list[training.Row]) -> Any:
            return vectors[[index[r.text] for r in rows]]

        train = corpus.part("train")
        test = corpus.part("test")
        harm_train = [r for r in train if r.harm]
        injection_train = [r for r in train if r.injection is not None]
        harm = training.fit_harm(harm_train, matrix(harm_train))
        injection = training.fit_injection(injection_train, matrix(injection_train))

        held_out = _held_out(
            harm.model,
            injection.model,
            [
                r
                for r in test
                if r.source in {"do-not-answer", "prompt-injections", "handwritten", "sounds-harmful"}
            ],
            matrix,
        )
        common = _provenance(model_name)
        for name, fitted in (("harm", harm), ("injection", injection)):
            model = fitted.model
            model.meta.update(common)
            model.meta["version"] = f"{name}-{MODEL_VERSION}"
            model.meta["metrics"]["held_out"] = held_out[name]
        result = {
            "embedding_model": model_name,
            "embedding_seconds": round(embed_seconds, 1),
            "rows": {"train": len(train), "held_out": len(test)},
            "harm": {**harm.model.meta},
            "injection": {**injection.model.meta},
        }
        if not options["dry_run"]:
            out = Path(options["out"])
            harm.model.save(out / "harm.json")
            injection.model.save(out / "injection.json")
            checks._load.cache_clear()
            result["written"] = [str(out / "harm.json"), str(out / "injection.json")]
        self.stdout.write(json.dumps(result, indent=2, default=str))


def _embed(corpus: training.Corpus, cache: training.EmbeddingCache) -> tuple[Any, float]:
    """The rows' query embeddings (of their sanitised text, as the checks embed it), and the seconds taken."""
    sanitized = {r.text: checks.sanitize(r.text) for r in corpus.rows}
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        sys.stderr.write(f"\rembedding {done}/{total}")
        if done == total:
            sys.stderr.write("\n")

    try:
        vectors = cache.embed(
            [sanitized[r.text] for r in corpus.rows],
            lambda batch: provider.embed(batch, kind="query").vectors,
            progress=progress,
        )
    except provider.ProviderError as exc:
        raise CommandError(f"Embedding failed: {exc}") from exc
    return vectors, time.perf_counter() - started


def _provenance(model_name: str) -> dict[str, Any]:
    """What every model file says about its embedding model, split and sources."""
    return {
        "embedding_model": model_name,
        "split": {"salt": training.SPLIT_SALT, "held_out_percent": training.HELD_OUT_PERCENT},
        "sources": [
            "do-not-answer",
            "prompt-injections (deepset, 462-row part)",
            "squad 2.0 dev questions",
            "clinc150",
            "hand-written benign (guardrails/training_data.py)",
            "sounds-harmful, safe and unsafe (guardrails/data/sounds_harmful.jsonl, its train split)",
            "drcd questions",
            "covid-qa questions",
        ],
    }


def _held_out(
    harm: LogisticModel, injection: LogisticModel, rows: list[training.Row], matrix: Any
) -> dict[str, Any]:
    """Classifier + rules on the held-out rows of the labelled sets (never seen in fitting)."""
    if not rows:
        return {"harm": {}, "injection": {}}
    x = matrix(rows)
    texts = [r.text for r in rows]
    harm_scores = training.harm_scores(harm.predict_proba(x), harm.classes, texts)
    injection_scores = training.injection_scores(injection.predict_proba(x), injection.classes, texts)
    harm_threshold = float(harm.meta["threshold"])
    injection_threshold = float(injection.meta["threshold"])
    dna = [i for i, r in enumerate(rows) if r.source == "do-not-answer"]
    benign = [i for i, r in enumerate(rows) if r.harm == training.BENIGN]
    sounds = [i for i, r in enumerate(rows) if r.source == "sounds-harmful"]
    injection_rows = [i for i, r in enumerate(rows) if r.source == "prompt-injections"]
    return {
        "harm": {
            "do_not_answer_flagged": training.rate([bool(harm_scores[i] >= harm_threshold) for i in dna]),
            "benign_flagged": training.rate([bool(harm_scores[i] >= harm_threshold) for i in benign]),
            "n_harmful": len(dna),
            "n_benign": len(benign),
            # The classifier and rules only: the input checks also count injection verdicts.
            "sounds_harmful_safe_flagged": training.rate(
                [bool(harm_scores[i] >= harm_threshold) for i in sounds if rows[i].harm == training.BENIGN]
            ),
            "sounds_harmful_unsafe_flagged": training.rate(
                [bool(harm_scores[i] >= harm_threshold) for i in sounds if rows[i].harm != training.BENIGN]
            ),
        },
        "injection": training.prf(
            [bool(injection_scores[i] >= injection_threshold) for i in injection_rows],
            [bool(rows[i].injection) for i in injection_rows],
        ),
    }
