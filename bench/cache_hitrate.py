"""Ideas for the answer cache's hit rate on CLINC150, each calibrated on calibration probes only.

Same cache, probes and protocol as bench/cache_calibrate.py (75 intents x --per-intent train
phrasings cached; calibration probes: val + oos_val + oos_train; held-out: test + oos_test), and
the vectors it saved in .data/bench-cache/ (run it first; --vectors points elsewhere). An intent
stands for one answer. Every rule's parameters are chosen on the calibration probes at the
false-hit limit that 2-fold cross-validation within them shows keeps new probes under --max-false
(as cache_calibrate does); the held-out probes are only reported.

Ideas:

- `cosine`: the shipped rule (nearest cached question at cosine >= t), the reference.
- `centred`: the same after subtracting the mean of the cached vectors and re-normalising (a
  statistic of the cache alone, no probe is used): removes the direction every e5 vector shares.
- `vote`: nearest at cosine >= t, or at >= t_low when at least m of the k nearest cached questions
  at >= t_low carry the same answer as the nearest (in the product: entries of one source answer,
  e.g. learned phrasings, or answers citing the same chunks).
- `learn`: the cache learns phrasings. Probes arrive as a stream in random order; each is looked
  up against the cache as it is at that moment (the shipped cosine rule); a served answer whose
  asker *confirms* it adds the new question as another key of the same answer. What confirms it
  is an assumption, reported separately: `rated`: the asker rates the served answer helpful
  (Feedback +1) with probability r, and never rates a wrong answer helpful; `unflagged`: every
  served answer that is not flagged is kept, and an asker flags a wrong one with probability f
  (a right one never). Misses add nothing here (in the product a missed question's own answer is
  cached too, which this leaves out, so the figures are the effect of learning from hits alone).

    nice -n 19 python bench/cache_hitrate.py [--out FILE]

Data: CLINC150 (clinc/oos-eval, data/data_full.json), CC BY 3.0.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cache_calibrate import CITATION, VECTOR_DIR, draw  # noqa: E402
from bench.common import emit, environment, log, setup_django  # noqa: E402

K = 20  # neighbours kept per probe


@dataclass
class Group:
    """Probes of one kind and their K nearest cached questions."""

    sims: Any  # (n, K) nearest first
    labels: Any  # (n, K) intent index of each neighbour
    own: Any  # (n,) the probe's intent index (-1: not in the cache)

    def take(self, rows: Any) -> Group:
        return Group(self.sims[rows], self.labels[rows], self.own[rows])


Rule = Callable[[Group], tuple[Any, Any]]  # -> (served, served label)


def _load_vectors(path: Path) -> dict[str, list[float]]:
    vectors: dict[str, list[float]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        vectors[row["t"]] = row["v"]
    return vectors


def _neighbours(probes: Any, cache: Any, labels: Any, own: Any) -> Group:
    import numpy as np

    sims = probes @ cache.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :K]
    return Group(np.take_along_axis(sims, top, axis=1), labels[top], own)


def _rates(rule: Rule, groups: dict[str, Group]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, g in groups.items():
        served, label = rule(g)
        n = len(served)
        if name == "same_intent":
            right = served & (label == g.own)
            out["hit_rate"] = round(float(right.sum()) / n, 4)
            out["wrong_hit_rate"] = round(float((served & ~right).sum()) / n, 4)
        else:
            out[f"false_hit_rate_{name}"] = round(float(served.sum()) / n, 4)
    out["max_false_hit_rate"] = max(v for k, v in out.items() if k != "hit_rate")
    return out


def _choose(rules: list[tuple[Any, Rule]], groups: dict[str, Group], limit: float) -> tuple[Any, Rule] | None:
    best: tuple[Any, ...] | None = None
    chosen = None
    for params, rule in rules:
        r = _rates(rule, groups)
        if r["max_false_hit_rate"] > limit:
            continue
        key = (r["hit_rate"], -r["max_false_hit_rate"])
        if best is None or key > best:
            best, chosen = key, (params, rule)
    return chosen


def _calibrate(
    rules: list[tuple[Any, Rule]], cal: dict[str, Group], max_false: float, seed: int, repeats: int
) -> tuple[Any, Rule, float, dict[str, float]]:
    """The rule chosen on all calibration probes at the loosest limit whose out-of-fold false-hit
    rate (2-fold CV within the calibration probes) is at most max_false."""
    import numpy as np

    limits = [round(max_false * f, 5) for f in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)]
    rng = np.random.default_rng(seed)
    outcomes: dict[float, list[tuple[float, float]]] = {x: [] for x in limits}
    for _ in range(repeats):
        folds: list[dict[str, Group]] = [{}, {}]
        for name, g in cal.items():
            order = rng.permutation(len(g.own))
            half = len(order) // 2
            folds[0][name], folds[1][name] = g.take(order[:half]), g.take(order[half:])
        for train, test in ((folds[0], folds[1]), (folds[1], folds[0])):
            for limit in limits:
                found = _choose(rules, train, limit)
                r = _rates(found[1], test) if found else {"hit_rate": 0.0, "max_false_hit_rate": 0.0}
                outcomes[limit].append((r["hit_rate"], r["max_false_hit_rate"]))
    cv = {
        x: (float(np.mean([h for h, _ in v])), float(np.mean([f for _, f in v]))) for x, v in outcomes.items()
    }
    limit = next((x for x in limits if cv[x][1] <= max_false), limits[-1])
    found = _choose(rules, cal, limit) or rules[-1]
    return (
        found[0],
        found[1],
        limit,
        {"hit_rate": round(cv[limit][0], 4), "max_false_hit_rate": round(cv[limit][1], 4)},
    )


def _cosine(t: float) -> Rule:
    def rule(g: Group) -> tuple[Any, Any]:
        return g.sims[:, 0] >= t, g.labels[:, 0]

    return rule


def _vote(t: float, low: float, m: int, k: int) -> Rule:
    def rule(g: Group) -> tuple[Any, Any]:
        near = (g.sims[:, :k] >= low) & (g.labels[:, :k] == g.labels[:, :1])
        served = (g.sims[:, 0] >= t) | ((g.sims[:, 0] >= low) & (near.sum(axis=1) >= m))
        return served, g.labels[:, 0]

    return rule


def _stream(
    probes: dict[str, tuple[Any, Any]],
    cache: Any,
    labels: Any,
    t: float,
    confirm_right: float,
    confirm_wrong: float,
    seed: int,
    store_misses: bool = False,
) -> dict[str, float]:
    """Prequential: each probe is looked up, then (maybe) learned; rates as in `_rates`.

    With `store_misses`, a missed in-scope probe is cached under its own answer, as the product
    caches the answer the model then gives (its own intent's label; other intents get labels
    of their own, so a later probe of that intent hitting it is a right hit, counted apart)."""
    import numpy as np

    rng = random.Random(seed)
    order = [(name, i) for name, (vectors, _) in probes.items() for i in range(len(vectors))]
    rng.shuffle(order)
    dims = cache.shape[1]
    keys = np.zeros((len(cache) + len(order), dims))
    keys[: len(cache)] = cache
    key_labels = np.concatenate([labels, np.full(len(order), -2)])
    size = len(cache)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # probes, right hits, wrong hits
    learned = [0, 0]  # right, wrong
    for name, i in order:
        vector, own = probes[name][0][i], int(probes[name][1][i])
        sims = keys[:size] @ vector
        best = int(np.argmax(sims))
        counts[name][0] += 1
        if sims[best] < t:
            if store_misses and name != "oos":
                keys[size], key_labels[size] = vector, own
                size += 1
            continue
        label = int(key_labels[best])
        if name == "other_intent" and label == own:
            counts["other_intent_right"][1] += 1  # its own intent, cached from an earlier miss
            continue
        right = name == "same_intent" and label == own
        counts[name][1 if right else 2] += 1
        if rng.random() < (confirm_right if right else confirm_wrong):
            keys[size], key_labels[size] = vector, label
            size += 1
            learned[0 if right else 1] += 1
    out = {
        "hit_rate": round(counts["same_intent"][1] / counts["same_intent"][0], 4),
        "wrong_hit_rate": round(counts["same_intent"][2] / counts["same_intent"][0], 4),
    }
    for name in probes:
        if name != "same_intent":
            out[f"false_hit_rate_{name}"] = round(counts[name][2] / counts[name][0], 4)
    out["max_false_hit_rate"] = max(v for k, v in out.items() if k != "hit_rate")
    out["learned_right"], out["learned_wrong"] = learned
    if store_misses:
        out["other_intent_right_hit_rate"] = round(
            counts["other_intent_right"][1] / counts["other_intent"][0], 4
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-intent", type=int, default=20)
    parser.add_argument("--probes-per-intent", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cv-repeats", type=int, default=4)
    parser.add_argument("--max-false", type=float, default=0.01)
    parser.add_argument("--vectors", help="the clinc150-*.jsonl cache_calibrate wrote")
    parser.add_argument("--out")
    args = parser.parse_args()
    setup_django()
    import numpy as np

    from answer_cache.text import normalize_question

    cached, other, cache_rows, splits = draw(args.seed, args.per_intent, args.probes_per_intent)
    path = (
        Path(args.vectors)
        if args.vectors
        else max(VECTOR_DIR.glob("clinc150-*.jsonl"), key=lambda p: p.stat().st_size)
    )
    vectors = _load_vectors(path)
    log(f"{len(vectors)} vectors from {path}")
    index = {intent: i for i, intent in enumerate(cached)}
    index.update({intent: 1000 + i for i, intent in enumerate(other)})  # never cached at the start

    def matrix(rows: list[tuple[str, str]]) -> Any:
        m = np.array([vectors[normalize_question(t)] for t, _ in rows], dtype=np.float64)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    def own(rows: list[tuple[str, str]]) -> Any:
        return np.array([index.get(intent, -1) for _, intent in rows])  # oos: -1

    cache = matrix(cache_rows)
    labels = own(cache_rows)
    mean = cache.mean(axis=0)

    def centre(m: Any) -> Any:
        c = m - mean
        return c / np.linalg.norm(c, axis=1, keepdims=True)

    spaces = {"plain": (cache, lambda m: m), "centred": (centre(cache), centre)}
    groups: dict[str, dict[str, dict[str, Group]]] = {}
    raw: dict[str, dict[str, tuple[Any, Any]]] = {}
    for split, by_name in splits.items():
        raw[split] = {name: (matrix(rows), own(rows)) for name, rows in by_name.items()}
        for space, (keys, transform) in spaces.items():
            groups.setdefault(space, {})[split] = {
                name: _neighbours(transform(m), keys, labels, o) for name, (m, o) in raw[split].items()
            }

    steps = [round(0.80 + 0.005 * i, 4) for i in range(41)]  # 0.80 .. 1.00
    results: dict[str, Any] = {}

    def report(name: str, space: str, rules: list[tuple[Any, Rule]]) -> tuple[Any, Rule]:
        params, rule, limit, cv = _calibrate(
            rules, groups[space]["calibration"], args.max_false, args.seed, args.cv_repeats
        )
        results[name] = {
            "params": params,
            "calibration_limit": limit,
            "cross_validated": cv,
            "calibration": _rates(rule, groups[space]["calibration"]),
            "held_out": _rates(rule, groups[space]["held_out"]),
        }
        log(f"{name}: {results[name]}")
        return params, rule

    base, _ = report("cosine", "plain", [({"t": t}, _cosine(t)) for t in steps])
    report(
        "centred", "centred", [({"t": t}, _cosine(t)) for t in [round(0.5 + 0.01 * i, 3) for i in range(51)]]
    )
    vote_rules = [
        ({"t": t, "t_low": low, "m": m, "k": k}, _vote(t, low, m, k))
        for t in steps[::2]
        for low in steps[::2]
        if low < t
        for k in (5, 10)
        for m in (2, 3, 4, 5)
        if m <= k
    ]
    report("vote", "plain", vote_rules)

    # Learning phrasings, at the shipped threshold chosen above (calibrated without learning).
    t = base["t"]
    learning: dict[str, Any] = {}
    for label, right, wrong in (
        ("rated_r0.1", 0.1, 0.0),
        ("rated_r0.3", 0.3, 0.0),
        ("unflagged_f0.5", 1.0, 0.5),
        ("unflagged_f0.0", 1.0, 1.0),
        ("oracle_every_right_hit", 1.0, 0.0),
    ):
        learning[label] = {
            split: _stream(raw[split], cache, labels, t, right, wrong, args.seed)
            for split in ("calibration", "held_out")
        }
        log(f"learn {label}: {learning[label]}")
    # What the product already does: every missed question's answer is cached too.
    learning["misses_cached"] = {
        split: _stream(raw[split], cache, labels, t, 0.0, 0.0, args.seed, store_misses=True)
        for split in ("calibration", "held_out")
    }
    learning["misses_cached_and_oracle_hits"] = {
        split: _stream(raw[split], cache, labels, t, 1.0, 0.0, args.seed, store_misses=True)
        for split in ("calibration", "held_out")
    }
    log(f"misses cached: {learning['misses_cached']}")
    log(f"misses cached + every right hit: {learning['misses_cached_and_oracle_hits']}")
    results["learn"] = {"threshold": t, **learning}

    emit(
        {
            "benchmark": "cache_hitrate",
            "dataset": CITATION,
            "vectors": path.name,
            "per_intent": args.per_intent,
            "max_false_allowed": args.max_false,
            "results": results,
            "environment": environment(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
