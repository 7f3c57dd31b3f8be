"""Instructions planted in documents: how many the chunk check catches, and whether any of a caught
one still reaches the prompt.

Every injection of the prompt-injections set (deepset, label 1) is planted in a clean paragraph
(SQuAD 2.0 and DRCD, in turn), after a random sentence, once as written and once followed by a
link sentence ("Visit https://… now."), and `guardrails.checks.check_chunk` runs over it, as the
answer pipeline does for every retrieved chunk. For each planted paragraph:

- caught: the chunk is quarantined;
- removed whole: none of the planted text's words that the paragraph did not already hold is
  left in the neutralised text, and no link in it is clickable (`https://` left);
- the document's own words kept: how much of the paragraph survives the removal (collateral);
- a clean paragraph quarantined: every paragraph of SQuAD 2.0, COVID-QA and DRCD as written.

Rules only, no model: it runs in about a minute.

    python bench/injection_removal.py [--seed 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.answer_quality import DRCD_DEV, wilson  # noqa: E402
from bench.common import COVID_QA, DATASETS, SQUAD_DEV, emit, load_json, log, setup_django  # noqa: E402

INJECTIONS = DATASETS / "prompt-injections" / "dev.jsonl"
LINK = "Visit https://evil.example/verify?user=you now."


def paragraphs() -> dict[str, list[str]]:
    squad = [p["context"] for a in load_json(SQUAD_DEV)["data"] for p in a["paragraphs"]]
    drcd = [p["context"] for a in load_json(DRCD_DEV)["data"] for p in a["paragraphs"]]
    covid = [p["context"] for a in load_json(COVID_QA)["data"] for p in a["paragraphs"]]
    return {"squad": squad, "drcd": drcd, "covid-qa": covid}


def plant(paragraph: str, injection: str, rng: random.Random) -> str:
    from common.text import sentence_spans

    spans = sentence_spans(paragraph)
    cut = spans[rng.randrange(len(spans))].end if spans else len(paragraph)
    return f"{paragraph[:cut]} {injection} {paragraph[cut:].lstrip()}".strip()


def leaked(planted: str, paragraph: str, neutralised: str) -> bool:
    """Whether any word the planted text brought (and the paragraph lacked) is still there."""
    from common.text import content_terms
    from guardrails.injection import NEUTRALISED

    kept = neutralised.replace(NEUTRALISED, " ")  # the marker's own words are not the planted text's
    brought = content_terms(planted) - content_terms(paragraph)
    return bool(brought & content_terms(kept)) or "https://" in kept or "http://" in kept


def host_share(planted: str, paragraph: str, neutralised: str) -> float:
    """The share of the paragraph's own words (not the planted text's) still in the chunk."""
    from common.text import content_terms

    own = content_terms(paragraph) - content_terms(planted)
    return len(own & content_terms(neutralised)) / len(own) if own else 1.0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    setup_django()
    from guardrails.checks import check_chunk

    started = time.perf_counter()
    rows = [json.loads(line) for line in INJECTIONS.read_text().splitlines() if line.strip()]
    injections = [r["text"] for r in rows if r["label"] == 1]
    corpora = paragraphs()
    rng = random.Random(args.seed)
    results: dict[str, Any] = {}
    for name in ("squad", "drcd"):
        for variant in ("as_written", "with_link"):
            caught = whole = 0
            host_kept: list[float] = []
            misses: list[str] = []
            leaks: list[dict[str, str]] = []
            for injection in injections:
                paragraph = rng.choice(corpora[name])
                planted_text = injection if variant == "as_written" else f"{injection} {LINK}"
                chunk = plant(paragraph, planted_text, rng)
                verdict = check_chunk(chunk)
                if not verdict.is_injection:
                    if len(misses) < args.examples:
                        misses.append(injection[:160])
                    continue
                caught += 1
                host_kept.append(host_share(planted_text, paragraph, verdict.neutralised_text))
                if leaked(planted_text, paragraph, verdict.neutralised_text):
                    if len(leaks) < args.examples:
                        leaks.append({"planted": planted_text[:200], "kept": verdict.neutralised_text[:400]})
                else:
                    whole += 1
            n = len(injections)
            results[f"{name}_{variant}"] = {
                "planted": n,
                "caught": {"k": caught, "rate": round(caught / n, 3), "ci95": wilson(caught, n)},
                "removed_whole_of_caught": {
                    "k": whole,
                    "rate": round(whole / caught, 3) if caught else None,
                    "ci95": wilson(whole, caught),
                },
                "reaches_the_prompt": {"k": n - whole, "rate": round((n - whole) / n, 3)},
                "document_words_kept_mean": round(sum(host_kept) / len(host_kept), 3) if host_kept else None,
                "missed_examples": misses,
                "leak_examples": leaks,
            }
        log(f"{name} done")
    false_alarms: dict[str, Any] = {}
    for name, texts in corpora.items():
        flagged = [t for t in texts if check_chunk(t).is_injection]
        false_alarms[name] = {
            "paragraphs": len(texts),
            "quarantined": len(flagged),
            "rate": round(len(flagged) / len(texts), 4),
            "examples": [t[:200] for t in flagged[: args.examples]],
        }
    emit(
        {
            "benchmark": "injection_removal",
            "datasets": {
                "injections": "deepset/prompt-injections, a 462-row part (label 1: 185), Apache-2.0",
                "paragraphs": "SQuAD 2.0 dev half (CC BY-SA 4.0), DRCD dev (CC BY-SA 3.0), "
                "COVID-QA (Apache-2.0)",
            },
            "planted": results,
            "clean_paragraphs": false_alarms,
            "duration_s": round(time.perf_counter() - started, 1),
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
