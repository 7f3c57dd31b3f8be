"""Calibrate the answer cache's match rule on CLINC150, then report it on held-out data.

The cache holds questions of half of the 150 intents (up to --per-intent phrasings each, from the
train split, as earlier askers would have put them). A probe is a new question:

- a same-intent paraphrase (an intent in the cache) is a *hit* when the rule accepts a cached
  question of its own intent; accepting one of another intent is a *wrong hit* (a false hit: it
  would serve another question's answer);
- a question of an intent not in the cache, or an out-of-scope one, must not hit at all: any
  accepted candidate is a *false hit*.

The rule is answer_cache.services.MatchRule (vectorised here, and checked against
MatchRule.accepts for the chosen parameters) on the --candidates nearest cached questions of
each probe: accept the nearest candidate whose cosine similarity is >= `similarity`, or >= `floor`
with content-word overlap (answer_cache.text.word_overlap) >= `min_overlap`. Two families are
calibrated: cosine alone (floor = similarity) and cosine + word overlap. For each, the parameters
are those with the highest hit rate on the calibration probes (val + oos_val + oos_train) at
which every false-hit rate is at most a limit (ties: the stricter rule). The limit is the loosest
whose out-of-fold false-hit rate, by 2-fold cross-validation within the calibration probes, is
at most --max-false: a rule that just meets 1% on the probes it was chosen on exceeds it on new
ones. The family with the better out-of-fold hit rate is chosen. Hit and false-hit rates are then
reported on the held-out probes (test + oos_test), which played no part in choosing anything.

Questions are normalised as the cache does (answer_cache.text.normalize_question) and embedded
as queries through gateway.provider.embed (the configured server: the local e5 by default).
Vectors are kept in .data/bench-cache/ keyed by model and text, so a rerun embeds nothing new.
Similarity is computed here with numpy; it is the same cosine the cache's pgvector query uses.

    nice -n 19 python bench/cache_calibrate.py [--per-intent 20] [--seed 7] [--out FILE]

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DATASETS, REPO_ROOT, emit, environment, log, setup_django  # noqa: E402

if TYPE_CHECKING:
    from answer_cache.services import MatchRule
else:
    MatchRule = Any

CLINC = DATASETS / "clinc150" / "data_full.json"
CITATION = "CLINC150 (clinc/oos-eval, data/data_full.json), CC BY 3.0"
VECTOR_DIR = REPO_ROOT / ".data" / "bench-cache"


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


def _matrix(texts: list[str], vectors: dict[str, list[float]]) -> Any:
    import numpy as np

    m = np.array([vectors[t] for t in texts], dtype=np.float64)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


@dataclass
class Probes:
    """For each probe, its `k` nearest cached questions: similarity, word overlap, right intent."""

    sims: Any  # (n, k) float, nearest first
    overlap: Any  # (n, k) float
    right: Any  # (n, k) bool: the candidate is of the probe's own intent
    texts: list[tuple[str, list[str]]]  # (probe, its candidates), for the check against MatchRule


def _probes(
    rows: list[tuple[str, str]], cache: list[tuple[str, str]], vectors: dict[str, list[float]], k: int
) -> Probes:
    import numpy as np

    from answer_cache.text import normalize_question, word_overlap

    probe_texts = [normalize_question(t) for t, _ in rows]
    cache_texts = [normalize_question(t) for t, _ in cache]
    sims = _matrix(probe_texts, vectors) @ _matrix(cache_texts, vectors).T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    overlap = np.array(
        [[word_overlap(probe_texts[i], cache_texts[j]) for j in top[i]] for i in range(len(rows))]
    )
    right = np.array([[cache[j][1] == rows[i][1] for j in top[i]] for i in range(len(rows))])
    texts = [(probe_texts[i], [cache_texts[j] for j in top[i]]) for i in range(len(rows))]
    return Probes(np.take_along_axis(sims, top, axis=1), overlap, right, texts)


def _check(rule: MatchRule, p: Probes) -> None:
    """The vectorised decisions are MatchRule.accepts's own, candidate by candidate."""
    for i, (probe, candidates) in enumerate(p.texts):
        for j, cached in enumerate(candidates):
            own = rule.accepts(similarity=float(p.sims[i, j]), question=probe, cached_question=cached)
            vectorised = p.sims[i, j] >= rule.similarity or (
                p.sims[i, j] >= rule.floor and p.overlap[i, j] >= rule.min_overlap
            )
            assert own == bool(vectorised), (probe, cached)


def _accepted(rule: MatchRule, p: Probes) -> tuple[Any, Any]:
    """(any candidate accepted, index of the first accepted) per probe: MatchRule.choose, vectorised."""
    ok = (p.sims >= rule.similarity) | ((p.sims >= rule.floor) & (p.overlap >= rule.min_overlap))
    return ok.any(axis=1), ok.argmax(axis=1)


def _rates(rule: MatchRule, groups: dict[str, Probes]) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {}
    for name, p in groups.items():
        hit, first = _accepted(rule, p)
        n = len(hit)
        if name == "same_intent":
            right = hit & p.right[np.arange(n), first]
            out["hit_rate"] = round(float(right.sum()) / n, 4)
            out["wrong_hit_rate"] = round(float((hit & ~right).sum()) / n, 4)
            out["same_intent_probes"] = n
        else:
            out[f"false_hit_rate_{name}"] = round(float(hit.sum()) / n, 4)
            out[f"{name}_probes"] = n
    out["max_false_hit_rate"] = max(
        out.get("wrong_hit_rate", 0),
        out.get("false_hit_rate_other_intent", 0),
        out.get("false_hit_rate_oos", 0),
    )
    return out


def _grid(family: str, k: int) -> list[MatchRule]:
    from answer_cache.services import MatchRule

    steps = [round(0.85 + 0.005 * i, 4) for i in range(31)]  # 0.85 .. 1.00
    if family == "cosine":
        return [MatchRule(similarity=c, floor=c, min_overlap=2.0, candidates=k) for c in steps]
    overlaps = [round(0.1 * i, 2) for i in range(1, 11)]  # 0.1 .. 1.0
    return [
        MatchRule(similarity=c, floor=a, min_overlap=b, candidates=k)
        for c in steps
        for a in steps
        if a < c
        for b in overlaps
    ]


def _calibrate(
    rules: list[MatchRule], groups: dict[str, Probes], limits: list[float]
) -> dict[float, MatchRule | None]:
    """Per false-hit limit, the rule with the best hit rate within it (ties: the stricter rule)."""
    best: dict[float, tuple[float, float, float, float, float]] = {}
    chosen: dict[float, MatchRule | None] = dict.fromkeys(limits)
    for rule in rules:
        rates = _rates(rule, groups)
        key = (rates["hit_rate"], -rates["max_false_hit_rate"], rule.similarity, rule.floor, rule.min_overlap)
        for limit in limits:
            if rates["max_false_hit_rate"] <= limit and (limit not in best or key > best[limit]):
                best[limit], chosen[limit] = key, rule
    return chosen


def _subset(p: Probes, rows: Any) -> Probes:
    return Probes(p.sims[rows], p.overlap[rows], p.right[rows], [p.texts[i] for i in rows])


def _cross_validate(
    rules: list[MatchRule], groups: dict[str, Probes], limits: list[float], repeats: int, seed: int
) -> dict[float, dict[str, float]]:
    """Out-of-fold rates of calibrating at each limit: 2-fold, `repeats` times, calibration only.

    A rule chosen to just meet a limit on the probes it was chosen on does worse on new ones
    (with ~1000 probes, 1% is a handful of false hits); this measures by how much, so the limit
    used for the final choice can leave that margin.
    """
    import numpy as np

    outcomes: dict[float, list[tuple[float, float]]] = {limit: [] for limit in limits}
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        folds: list[dict[str, Probes]] = [{}, {}]
        for name, p in groups.items():
            order = rng.permutation(len(p.texts))
            half = len(order) // 2
            folds[0][name], folds[1][name] = _subset(p, order[:half]), _subset(p, order[half:])
        for train, test in ((folds[0], folds[1]), (folds[1], folds[0])):
            for limit, rule in _calibrate(rules, train, limits).items():
                rates = _rates(rule, test) if rule is not None else {"hit_rate": 0, "max_false_hit_rate": 0}
                outcomes[limit].append((rates["hit_rate"], rates["max_false_hit_rate"]))
    return {
        limit: {
            "hit_rate": round(float(np.mean([h for h, _ in rows])), 4),
            "max_false_hit_rate": round(float(np.mean([f for _, f in rows])), 4),
        }
        for limit, rows in outcomes.items()
    }


def _describe(rule: MatchRule) -> dict[str, Any]:
    if rule.floor >= rule.similarity:
        return {"rule": "cosine >= similarity", "similarity": rule.similarity, "candidates": rule.candidates}
    return {
        "rule": "cosine >= similarity, or cosine >= floor and word_overlap >= min_overlap",
        "similarity": rule.similarity,
        "floor": rule.floor,
        "min_overlap": rule.min_overlap,
        "candidates": rule.candidates,
    }


Rows = list[tuple[str, str]]


def draw(
    seed: int, per_intent: int, probes_per_intent: int
) -> tuple[list[str], list[str], Rows, dict[str, dict[str, Rows]]]:
    """The cached intents, the others, the cached phrasings, and the calibration and held-out
    probes (same intent, other intent, out of scope), drawn from CLINC150 in a fixed order.
    bench/cache_hitrate.py makes the same draws through this."""
    data = json.loads(CLINC.read_text())
    rng = random.Random(seed)
    intents = sorted({intent for _, intent in data["train"]})
    rng.shuffle(intents)
    cached, other = sorted(intents[: len(intents) // 2]), sorted(intents[len(intents) // 2 :])
    cache_rows = _sample(data["train"], cached, per_intent, rng)
    n = probes_per_intent
    cal, held = random.Random(seed + 1), random.Random(seed + 2)  # independent draws
    splits = {
        "calibration": {
            "same_intent": _sample(data["val"], cached, n, cal),
            "other_intent": _sample(data["val"], other, n, cal),
            "oos": [(t, "oos") for t, _ in data["oos_val"] + data["oos_train"]],
        },
        "held_out": {
            "same_intent": _sample(data["test"], cached, n, held),
            "other_intent": _sample(data["test"], other, n, held),
            "oos": [(t, "oos") for t, _ in data["oos_test"]],
        },
    }
    return cached, other, cache_rows, splits


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-intent", type=int, default=20, help="cached phrasings per cached intent")
    parser.add_argument("--probes-per-intent", type=int, default=20, help="probes per intent and split")
    parser.add_argument("--cv-repeats", type=int, default=4, help="2-fold cross-validation repeats")
    parser.add_argument("--candidates", type=int, default=5, help="nearest cached questions checked")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-false", type=float, default=0.01)
    parser.add_argument("--out")
    args = parser.parse_args()
    setup_django()
    from answer_cache.text import normalize_question

    cached, other, cache_rows, splits = draw(args.seed, args.per_intent, args.probes_per_intent)
    everything = [normalize_question(t) for t, _ in cache_rows]
    for groups in splits.values():
        for rows in groups.values():
            everything.extend(normalize_question(t) for t, _ in rows)
    started = time.perf_counter()
    vectors = _embed_all(everything)
    embed_seconds = time.perf_counter() - started

    k = args.candidates
    evaluated = {
        split: {name: _probes(rows, cache_rows, vectors, k) for name, rows in groups.items()}
        for split, groups in splits.items()
    }
    # Each family is calibrated at the loosest limit whose out-of-fold false-hit rate (cross-
    # validated within the calibration probes) still meets --max-false; the family with the better
    # out-of-fold hit rate is chosen. The held-out probes play no part in any of it.
    limits = [round(args.max_false * f, 5) for f in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)]
    families: dict[str, Any] = {}
    rules_of: dict[str, MatchRule] = {}
    for family in ("cosine", "cosine_and_words"):
        rules = _grid(family, k)
        cv = _cross_validate(rules, evaluated["calibration"], limits, args.cv_repeats, args.seed)
        limit = next((x for x in limits if cv[x]["max_false_hit_rate"] <= args.max_false), limits[-1])
        rule = _calibrate(rules, evaluated["calibration"], [limit])[limit]
        if rule is None:
            rule = rules[-1]
        rules_of[family] = rule
        families[family] = {
            **_describe(rule),
            "calibration_limit": limit,
            "cross_validated": {str(x): v for x, v in cv.items()},
            "calibration": _rates(rule, evaluated["calibration"]),
            "held_out": _rates(rule, evaluated["held_out"]),
        }
    name = max(
        families,
        key=lambda f: families[f]["cross_validated"][str(families[f]["calibration_limit"])]["hit_rate"],
    )
    chosen = rules_of[name]
    for groups in evaluated.values():
        for probes in groups.values():
            _check(chosen, probes)

    per_k: dict[str, Any] = {}
    for size in sorted({s for s in (1, 5, 10, 20) if s < args.per_intent} | {args.per_intent}):
        seen: dict[str, int] = defaultdict(int)
        rows_k = []
        for text, intent in cache_rows:  # the first `size` phrasings of each cached intent
            seen[intent] += 1
            if seen[intent] <= size:
                rows_k.append((text, intent))
        groups = {g: _probes(rows, rows_k, vectors, k) for g, rows in splits["held_out"].items()}
        per_k[f"{size}_per_intent"] = {"cache_entries": len(rows_k), **_rates(chosen, groups)}

    held = families[name]["held_out"]
    results: dict[str, Any] = {
        "benchmark": "cache_calibrate",
        "dataset": CITATION,
        "method": "the --candidates nearest cached questions by cosine similarity, accepted by "
        "answer_cache.services.MatchRule; same-intent paraphrases should hit, other-intent and "
        "out-of-scope questions must not; parameters chosen on calibration probes, rates on held-out",
        "seed": args.seed,
        "cached_intents": len(cached),
        "uncached_intents": len(other),
        "per_intent": args.per_intent,
        "cache_entries": len(cache_rows),
        "max_false_allowed": args.max_false,
        "chosen_family": name,
        "chosen": _describe(chosen),
        "settings": {
            "ANSWER_CACHE_SIMILARITY": chosen.similarity,
            "ANSWER_CACHE_SIMILARITY_FLOOR": chosen.floor,
            "ANSWER_CACHE_MIN_WORD_OVERLAP": chosen.min_overlap if chosen.min_overlap <= 1 else 1.0,
            "ANSWER_CACHE_CANDIDATES": chosen.candidates,
        },
        "held_out": {
            "hit_rate": held["hit_rate"],
            "false_hit_rate_other_intent": held["false_hit_rate_other_intent"],
            "false_hit_rate_oos": held["false_hit_rate_oos"],
            "wrong_hit_rate_same_intent": held["wrong_hit_rate"],
            "probes": {g: held[f"{g}_probes"] for g in ("same_intent", "other_intent", "oos")},
        },
        "families": families,
        "held_out_by_cache_size": per_k,
        "targets": {
            "false_hits_at_most": 0.01,
            "hits_at_least": 0.5,
            "false_hits_met": held["max_false_hit_rate"] <= 0.01,
            "hits_met": held["hit_rate"] >= 0.5,
        },
        "texts_embedded": len(set(everything)),
        "embed_seconds": round(embed_seconds, 1),
        "environment": environment(),
    }
    emit(results, args.out)


if __name__ == "__main__":
    main()
