"""Guardrail decisions before and after a refactor: the same mixed rows, compared field by field.

    python bench/guard_decisions.py rows > rows.jsonl          # the mixed input rows
    python manage.py guard --jsonl rows.jsonl > before.jsonl   # on the commit before
    python manage.py guard --jsonl rows.jsonl > after.jsonl    # on the commit after
    python bench/guard_decisions.py diff before.jsonl after.jsonl

The rows: every prompt of guardrails/data/sounds_harmful.jsonl (safe prompts that sound harmful
beside unsafe ones, English and Chinese), the first 150 rows of deepset/prompt-injections
(Apache-2.0) and the first 150 questions of DRCD (CC BY-SA 3.0), read in place from
../shared/datasets. `diff` prints one JSON object: rows compared, and every row whose action,
categories, rewrite or scores (to 4 decimals) differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
EACH = 150


def rows() -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    sounds = ROOT / "guardrails" / "data" / "sounds_harmful.jsonl"
    for line in sounds.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            found.append({"id": f"sounds:{record['id']}", "text": record["text"]})
    injections = (DATASETS / "prompt-injections" / "dev.jsonl").read_text(encoding="utf-8").splitlines()
    for number, line in enumerate([x for x in injections if x.strip()][:EACH]):
        found.append({"id": f"injection:{number}", "text": json.loads(line)["text"]})
    drcd = json.loads((DATASETS / "drcd" / "DRCD_dev.json").read_text(encoding="utf-8"))
    questions = [qa["question"] for a in drcd["data"] for p in a["paragraphs"] for qa in p["qas"]]
    found += [{"id": f"drcd:{n}", "text": q} for n, q in enumerate(questions[:EACH])]
    return found


def _decisions(path: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        out[record["id"]] = {
            "action": record["action"],
            "categories": record["categories"],
            "rewrite": record["rewrite"],
            "notice": record.get("notice", ""),
            "scores": {k: round(v, 4) for k, v in record["scores"].items()},
        }
    return out


def diff(before: Path, after: Path) -> dict[str, Any]:
    old, new = _decisions(before), _decisions(after)
    changed = [
        {"id": key, "before": old[key], "after": new.get(key)} for key in old if old[key] != new.get(key)
    ]
    actions: dict[str, int] = {}
    for decision in old.values():
        actions[decision["action"]] = actions.get(decision["action"], 0) + 1
    return {"rows": len(old), "rows_after": len(new), "actions_before": actions, "changed": changed}


if __name__ == "__main__":
    if sys.argv[1:2] == ["rows"]:
        for row in rows():
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif sys.argv[1:2] == ["diff"] and len(sys.argv) == 4:
        sys.stdout.write(json.dumps(diff(Path(sys.argv[2]), Path(sys.argv[3])), ensure_ascii=False) + "\n")
    else:
        sys.exit(__doc__)
