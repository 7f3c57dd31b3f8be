"""Calibrate the answer cache's similarity threshold on CLINC150, then report it on held-out data.

The cache holds questions of half of the 150 intents (up to --per-intent phrasings each, from the
train split, as earlier askers would have put them). A probe is a new question:

- a same-intent paraphrase (an intent in the cache) is a *hit* when its nearest cached question is
  at or above the threshold and of its own intent; nearest above the threshold but of another
  intent is a *wrong hit* (a false hit: it would serve another question's answer);
- a question of an intent not in the cache, or an out-of-scope one, must not hit at all: any
  match at or above the threshold is a *false hit*.

The threshold is the lowest on a grid at which every false-hit rate is at most --max-false on the
calibration probes (val + oos_val + oos_train); hit and false-hit rates are then reported on the
held-out probes (test + oos_test), which played no part in choosing it.

Questions are normalised as the cache does (answer_cache.text.normalize_question) and embedded
as queries through gateway.provider.embed (the configured server: the local e5 by default).
Vectors are kept in .data/bench-cache/ keyed by model and text, so a rerun embeds nothing new.
Similarity is computed here with numpy; it is the same cosine the cache's pgvector query uses.

    nice -n 19 python bench/cache_calibrate.py [--per-intent 5] [--seed 7] [--out FILE]

Data: CLINC150 (clinc/oos-eval, data/data_full.json), CC BY 3.0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DATASETS, REPO_ROOT, emit, environment, log, setup_django  # noqa: E402

CLINC = DATASETS / "clinc150" / "data_full.json"
CITATION = "CLINC150 (clinc/oos-eval, data/data_full.json), CC BY 3.0"
VECTOR_DIR = REPO_ROOT / ".data" / "bench-cache"
GRID = [round(0.80 + 0.0025 * i, 4) for i in range(81)]  # 0.80 .. 1.00


def _sample(
    rows: list[list[str]], intents: list[str], per_intent: int, rng: random.Random
) -> list[tuple[str, str]]:
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, intent in rows:
        by_intent[intent].append(text)
    out: list[tuple[str, str]] = []
    for intent in intents:
        texts = sorted(by_intent[intent])
        rng.shuffle(texts)
        out.extend((t, intent) for t in texts[:per_intent])
    return out


def _embed_all(texts: list[str]) -> dict[str, list[float]]:
    from django.conf import settings

    from gateway import provider

    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{settings.EMBEDDING_MODEL}|{settings.EMBEDDINGS_BASE_URL}".encode()).hexdigest()[
        :12
    ]
    path = VECTOR_DIR / f"clinc150-{key}.jsonl"
    vectors: dict[str, list[float]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            vectors[row["t"]] = row["v"]
    missing = sorted({t for t in texts if t not in vectors})
    log(f"{len(texts)} texts, {len(missing)} to embed ({path.name})")
    started = time.perf_counter()
    with path.open("a") as out:
        for start in range(0, len(missing), 64):
            batch = missing[start : start + 64]
            for text, vector in zip(batch, provider.embed(batch, kind="query").vectors, strict=True):
                vectors[text] = vector
                out.write(json.dumps({"t": text, "v": [round(x, 6) for x in vector]}) + "\n")
            out.flush()
            done = start + len(batch)
            rate = done / max(time.perf_counter() - started, 1e-9)
            log(f"embedded {done}/{len(missing)} ({rate:.1f}/s)")
    return vectors


def _nearest(probes: Any, cache: Any) -> tuple[Any, Any]:
    import numpy as np

    sims = probes @ cache.T
    best = sims.argmax(axis=1)
    return best, sims[np.arange(len(probes)), best]


def _matrix(texts: list[str], vectors: dict[str, list[float]]) -> Any:
    import numpy as np

    m = np.array([vectors[t] for t in texts], dtype=np.float64)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _rates(
    threshold: float, groups: dict[str, tuple[Any, Any, list[str]]], cache_intents: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {"threshold": threshold}
    for name, (best, sims, intents) in groups.items():
        above = sims >= threshold
        n = len(intents)
        if name == "same_intent":
            right = sum(1 for i, a in enumerate(above) if a and cache_intents[best[i]] == intents[i])
            wrong = int(above.sum()) - right
            out["hit_rate"] = round(right / n, 4)
            out["wrong_hit_rate"] = round(wrong / n, 4)
            out["same_intent_probes"] = n
        else:
            out[f"false_hit_rate_{name}"] = round(float(above.sum()) / n, 4)
            out[f"{name}_probes"] = n
    out["max_false_hit_rate"] = max(
        out.get("wrong_hit_rate", 0),
        out.get("false_hit_rate_other_intent", 0),
        out.get("false_hit_rate_oos", 0),
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-intent", type=int, default=5, help="cached phrasings per cached intent")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-false", type=float, default=0.01)
    parser.add_argument("--out")
    args = parser.parse_args()
    setup_django()
    from answer_cache.text import normalize_question

    data = json.loads(CLINC.read_text())
    rng = random.Random(args.seed)
    intents = sorted({intent for _, intent in data["train"]})
    rng.shuffle(intents)
    cached, other = sorted(intents[: len(intents) // 2]), sorted(intents[len(intents) // 2 :])

    cache_rows = _sample(data["train"], cached, args.per_intent, rng)
    splits = {
        "calibration": {
            "same_intent": _sample(data["val"], cached, 6, rng),
            "other_intent": _sample(data["val"], other, 4, rng),
            "oos": [(t, "oos") for t, _ in data["oos_val"] + data["oos_train"]],
        },
        "held_out": {
            "same_intent": _sample(data["test"], cached, 8, rng),
            "other_intent": _sample(data["test"], other, 4, rng),
            "oos": [(t, "oos") for t, _ in rng.sample(data["oos_test"], 300)],
        },
    }
    everything = [normalize_question(t) for t, _ in cache_rows]
    for groups in splits.values():
        for rows in groups.values():
            everything.extend(normalize_question(t) for t, _ in rows)
    started = time.perf_counter()
    vectors = _embed_all(everything)
    embed_seconds = time.perf_counter() - started

    results: dict[str, Any] = {}
    per_k: dict[int, dict[str, Any]] = {}
    chosen: float | None = None
    for k in sorted({k for k in (1, 3, 5, 10, 20) if k <= args.per_intent} | {args.per_intent}):
        seen: dict[str, int] = defaultdict(int)
        rows_k = []
        for text, intent in cache_rows:  # the first k phrasings of each cached intent
            seen[intent] += 1
            if seen[intent] <= k:
                rows_k.append((text, intent))
        cache_m = _matrix([normalize_question(t) for t, _ in rows_k], vectors)
        cache_intents = [i for _, i in rows_k]
        evaluated: dict[str, dict[str, tuple[Any, Any, list[str]]]] = {}
        for split, groups in splits.items():
            evaluated[split] = {}
            for name, rows in groups.items():
                best, sims = _nearest(_matrix([normalize_question(t) for t, _ in rows], vectors), cache_m)
                evaluated[split][name] = (best, sims, [i for _, i in rows])
        if k == args.per_intent:
            curve = [_rates(t, evaluated["calibration"], cache_intents) for t in GRID]
            ok = [c for c in curve if c["max_false_hit_rate"] <= args.max_false]
            chosen = ok[0]["threshold"] if ok else GRID[-1]
            results["calibration_curve"] = [
                {key: c[key] for key in ("threshold", "hit_rate", "max_false_hit_rate")} for c in curve[::4]
            ]
            results["calibration_at_threshold"] = _rates(chosen, evaluated["calibration"], cache_intents)
            results["held_out_curve"] = [
                {key: c[key] for key in ("threshold", "hit_rate", "max_false_hit_rate")}
                for c in (_rates(t, evaluated["held_out"], cache_intents) for t in GRID[::4])
            ]
        per_k[k] = {"cache_entries": len(rows_k), "evaluated": evaluated, "cache_intents": cache_intents}
    assert chosen is not None
    held = {
        f"{k}_per_intent": {
            "cache_entries": v["cache_entries"],
            **_rates(chosen, v["evaluated"]["held_out"], v["cache_intents"]),
        }
        for k, v in per_k.items()
    }
    main_result = held[f"{args.per_intent}_per_intent"]
    results.update(
        {
            "benchmark": "cache_calibrate",
            "dataset": CITATION,
            "method": "nearest cached question by cosine similarity; same-intent paraphrases should hit, "
            "other-intent and out-of-scope questions must not",
            "seed": args.seed,
            "cached_intents": len(cached),
            "uncached_intents": len(other),
            "per_intent": args.per_intent,
            "max_false_allowed": args.max_false,
            "threshold": chosen,
            "held_out": held,
            "targets": {
                "false_hits_at_most": 0.01,
                "hits_at_least": 0.5,
                "false_hits_met": main_result["max_false_hit_rate"] <= 0.01,
                "hits_met": main_result["hit_rate"] >= 0.5,
            },
            "texts_embedded": len(set(everything)),
            "embed_seconds": round(embed_seconds, 1),
            "environment": environment(),
        }
    )
    emit(results, args.out)


if __name__ == "__main__":
    main()
