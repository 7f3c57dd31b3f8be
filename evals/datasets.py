"""Reading evaluation datasets: JSONL, CSV and SQuAD 2.0 files, into case drafts.

Parsing is all-or-nothing: the first bad line raises DatasetError with its line number and the
reason, before anything is written. The formats are documented in evals/README.md.

JSONL, one case per line (blank lines and lines starting with # are skipped):

    {"question": "...", "expected": "..." or ["...", "..."], "expected_behaviour": "answer",
     "must_cite": ["file name, title or document id"], "tags": ["..."],
     "facts": ["contains:...", "regex:...", "exact:...", "plain text is normalised"],
     "forbidden": ["CANARY"], "conversation": [{"role": "user", "content": "..."},
     {"role": "assistant", "content": "..."}], "id": "...", "notes": "..."}

CSV with a header row; the columns question, expected, expected_behaviour, must_cite, tags
(optional: facts, forbidden, id, notes). A cell holding several values separates them with "|";
tags may also be separated with commas.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from evals.models import Case

MAX_QUESTION_CHARS = 4000
FACT_KINDS = ("normalised", "contains", "exact", "regex")
JSONL_KEYS = frozenset(
    {
        "question", "expected", "expected_behaviour", "expected_behavior", "must_cite", "tags", "facts",
        "forbidden", "conversation", "history", "id", "notes",
    }
)  # fmt: skip
CSV_REQUIRED = ("question",)
CSV_KEYS = frozenset({"question", "expected", "expected_behaviour", "must_cite", "tags", "facts", "forbidden",
                      "id", "notes"})  # fmt: skip


class DatasetError(Exception):
    """A dataset file that cannot be imported; `line` is 1-based (None: the whole file)."""

    def __init__(self, reason: str, *, line: int | None = None, where: str = "") -> None:
        self.line = line
        self.reason = reason
        self.where = where
        place = f"line {line}" if line is not None else where
        super().__init__(f"{place}: {reason}" if place else reason)


@dataclass
class DocumentDraft:
    filename: str
    title: str
    text: str


@dataclass
class CaseDraft:
    question: str
    expected: list[str] = field(default_factory=list)
    facts: list[dict[str, str]] = field(default_factory=list)
    must_cite: list[str | int] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    expected_behaviour: str = Case.Behaviour.ANSWER
    tags: list[str] = field(default_factory=list)
    history: list[list[str]] = field(default_factory=list)
    notes: str = ""
    external_id: str = ""


@dataclass
class Dataset:
    cases: list[CaseDraft]
    documents: list[DocumentDraft] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


# --- field readers ------------------------------------------------------------------------


def _strings(value: object, what: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, list) and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        return [str(v).strip() for v in value if str(v).strip()]
    raise ValueError(f"{what} must be a string or a list of strings")


def fact(spec: object) -> dict[str, str]:
    """A fact from "kind:value" text or a {"match", "value"} object; plain text is normalised."""
    if isinstance(spec, dict):
        match, value = str(spec.get("match", "normalised")), spec.get("value")
    elif isinstance(spec, str):
        kind, sep, rest = spec.partition(":")
        kind = kind.strip().lower().replace("normalized", "normalised")
        match, value = (kind, rest) if sep and kind in FACT_KINDS else ("normalised", spec)
    else:
        raise ValueError("a fact is a string or an object with match and value")
    if match not in FACT_KINDS:
        raise ValueError(f"fact match {match!r} is not one of {', '.join(FACT_KINDS)}")
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a fact needs a non-empty value")
    if match == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"fact regex {value!r} does not compile: {exc}") from None
    return {"match": match, "value": value if match in {"regex", "exact"} else value.strip()}


def _behaviour(value: object) -> str:
    text = str(value or Case.Behaviour.ANSWER).strip().lower()
    if text not in Case.Behaviour.values:
        raise ValueError(f"expected_behaviour {text!r} is not one of {', '.join(Case.Behaviour.values)}")
    return text


def _history(messages: object) -> tuple[list[list[str]], str]:
    """Earlier (question, answer) pairs from a list of chat messages, and a trailing user message."""
    if messages in (None, []):
        return [], ""
    if not isinstance(messages, list):
        raise ValueError("conversation must be a list of {role, content} messages")
    pairs: list[list[str]] = []
    waiting: str | None = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in {"user", "assistant"}:
            raise ValueError(f"conversation[{i}] must be an object with role user or assistant")
        content = message.get("content")
        if not isinstance(content, str):
            raise ValueError(f"conversation[{i}] has no text content")
        if message["role"] == "user":
            if waiting is not None:
                raise ValueError(f"conversation[{i}]: two user messages in a row")
            waiting = content
        else:
            if waiting is None:
                raise ValueError(f"conversation[{i}]: an assistant message without a question before it")
            pairs.append([waiting, content])
            waiting = None
    return pairs, waiting or ""


def case_draft(record: Mapping[str, Any], *, list_separator: str | None = None) -> CaseDraft:
    """A validated draft from one record (a JSON object or a CSV row); ValueError says what is wrong."""

    def listed(key: str) -> list[str]:
        value = record.get(key)
        if list_separator is not None and isinstance(value, str):
            separators = f"[{re.escape(list_separator)},]" if key == "tags" else re.escape(list_separator)
            return [v.strip() for v in re.split(separators, value) if v.strip()]
        return _strings(value, key)

    history, trailing = _history(record.get("conversation") or record.get("history"))
    question = record.get("question") or trailing
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question is missing or empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"question is {len(question):,} characters; the limit is {MAX_QUESTION_CHARS:,}")
    facts_in = record.get("facts")
    facts_list = listed("facts") if isinstance(facts_in, str) else (facts_in or [])
    if not isinstance(facts_list, list):
        raise ValueError("facts must be a list")
    must_cite: list[str | int] = [int(v) if v.isdigit() else v for v in listed("must_cite")]
    return CaseDraft(
        question=question.strip(),
        expected=listed("expected"),
        facts=[fact(f) for f in facts_list],
        must_cite=must_cite,
        forbidden=listed("forbidden"),
        expected_behaviour=_behaviour(record.get("expected_behaviour") or record.get("expected_behavior")),
        tags=listed("tags"),
        history=history,
        notes=str(record.get("notes") or "").strip(),
        external_id=str(record.get("id") or "").strip()[:200],
    )


def _no_duplicate_ids(drafts: Iterable[tuple[int, CaseDraft]]) -> None:
    seen: dict[str, int] = {}
    for line, draft in drafts:
        if draft.external_id and draft.external_id in seen:
            raise DatasetError(
                f"id {draft.external_id!r} is used again (first on line {seen[draft.external_id]})", line=line
            )
        seen[draft.external_id] = line


# --- formats --------------------------------------------------------------------------------


def _text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError("the file is not UTF-8 text", line=line) from None


def parse_jsonl(data: bytes | str) -> Dataset:
    drafts: list[tuple[int, CaseDraft]] = []
    for number, line in enumerate(_text(data).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"not valid JSON ({exc.msg} at column {exc.colno})", line=number) from None
        if not isinstance(record, dict):
            raise DatasetError("each line must be a JSON object", line=number)
        unknown = sorted(set(record) - JSONL_KEYS)
        if unknown:
            raise DatasetError(f"unknown field(s) {', '.join(unknown)}", line=number)
        try:
            drafts.append((number, case_draft(record)))
        except ValueError as exc:
            raise DatasetError(str(exc), line=number) from None
    if not drafts:
        raise DatasetError("the file holds no cases")
    _no_duplicate_ids(drafts)
    return Dataset(cases=[d for _, d in drafts])


def parse_csv(data: bytes | str) -> Dataset:
    reader = csv.DictReader(io.StringIO(_text(data), newline=""), strict=True)
    try:
        header = [h.strip() for h in reader.fieldnames or []]
    except csv.Error as exc:
        raise DatasetError(f"unreadable header: {exc}", line=1) from None
    if not header:
        raise DatasetError("the file is empty; the first line must name the columns", line=1)
    missing = [c for c in CSV_REQUIRED if c not in header]
    unknown = sorted(set(header) - CSV_KEYS)
    if missing or unknown:
        problems = [f"missing column(s) {', '.join(missing)}" if missing else "",
                    f"unknown column(s) {', '.join(unknown)}" if unknown else ""]  # fmt: skip
        raise DatasetError("; ".join(p for p in problems if p), line=1)
    reader.fieldnames = header
    drafts: list[tuple[int, CaseDraft]] = []
    start = 2
    try:
        for row in reader:
            if None in row:
                raise DatasetError(
                    f"{len(header) + len(row[None])} cells but {len(header)} columns", line=start
                )
            if any(v is None for v in row.values()):
                raise DatasetError(f"fewer cells than the {len(header)} columns", line=start)
            if any(str(v).strip() for v in row.values()):
                try:
                    drafts.append((start, case_draft(row, list_separator="|")))
                except ValueError as exc:
                    raise DatasetError(str(exc), line=start) from None
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DatasetError(f"unreadable CSV: {exc}", line=reader.line_num) from None
    if not drafts:
        raise DatasetError("the file holds no cases, only a header")
    _no_duplicate_ids(drafts)
    return Dataset(cases=[d for _, d in drafts])


def parse_squad(data: bytes | str, *, limit: int | None = None, seed: int = 0) -> Dataset:
    """SQuAD (1.1 or 2.0) questions as cases, each paragraph as a document to answer from.

    Answerable questions expect one of their answers and must cite their paragraph; unanswerable
    ones (SQuAD 2.0 `is_impossible`) must abstain. With `limit`, a deterministic sample (by
    `seed`) takes half answerable and half unanswerable questions where the file has both.
    """
    try:
        root = json.loads(_text(data))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"not valid JSON ({exc.msg} at column {exc.colno})", line=exc.lineno) from None
    articles = root.get("data") if isinstance(root, dict) else None
    if not isinstance(articles, list):
        raise DatasetError('a SQuAD file is an object with a "data" list of articles', where="$")
    entries, contexts = _squad_entries(articles)
    if not entries:
        raise DatasetError("the file holds no questions", where="$")
    chosen = _squad_sample(entries, limit, seed)

    documents: dict[tuple[int, int], DocumentDraft] = {}
    cases: list[CaseDraft] = []
    for a, p, qa in chosen:
        title, context = contexts[(a, p)]
        document = documents.setdefault(
            (a, p),
            DocumentDraft(filename=f"squad-{a:03d}-{p:03d}.txt", title=f"{title} ({p + 1})", text=context),
        )
        cases.append(_squad_case(a, p, qa, title, document))
    return Dataset(
        cases=cases,
        documents=list(documents.values()),
        notes={
            "questions_in_file": len(entries),
            "sampled": len(chosen),
            "seed": seed,
            "unanswerable": sum(1 for c in cases if c.expected_behaviour == Case.Behaviour.ABSTAIN),
        },
    )


_SquadEntry = tuple[int, int, dict[str, Any]]  # (article, paragraph, the question's object)


def _squad_entries(articles: list[Any]) -> tuple[list[_SquadEntry], dict[tuple[int, int], tuple[str, str]]]:
    """Every question of the file, checked, and each paragraph's (title, context)."""
    entries: list[_SquadEntry] = []
    contexts: dict[tuple[int, int], tuple[str, str]] = {}
    for a, article in enumerate(articles):
        where = f"data[{a}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise DatasetError("an article needs a paragraphs list", where=where)
        title = str(article.get("title") or f"Article {a + 1}").replace("_", " ")
        for p, paragraph in enumerate(article["paragraphs"]):
            here = f"{where}.paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                raise DatasetError("a paragraph needs a context text", where=here)
            if not isinstance(paragraph.get("qas"), list):
                raise DatasetError("a paragraph needs a qas list", where=here)
            contexts[(a, p)] = (title, paragraph["context"])
            for q, qa in enumerate(paragraph["qas"]):
                _squad_check(qa, f"{here}.qas[{q}]")
                entries.append((a, p, qa))
    return entries, contexts


def _squad_check(qa: Any, spot: str) -> None:
    if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or not qa["question"].strip():
        raise DatasetError("a question needs its text", where=spot)
    impossible = bool(qa.get("is_impossible", False))
    answers = qa.get("answers") or []
    if not isinstance(answers, list) or not all(
        isinstance(x, dict) and isinstance(x.get("text"), str) for x in answers
    ):
        raise DatasetError("answers must be a list of {text, answer_start}", where=spot)
    if not impossible and not answers:
        raise DatasetError("an answerable question needs at least one answer", where=spot)


def _squad_sample(entries: list[_SquadEntry], limit: int | None, seed: int) -> list[_SquadEntry]:
    """`limit` entries, half unanswerable where the file has enough, in the file's order."""
    if limit is None or limit >= len(entries):
        return entries
    rng = random.Random(seed)  # noqa: S311 (a reproducible sample, not a secret)
    order = {id(e): i for i, e in enumerate(entries)}
    unanswerable = [e for e in entries if e[2].get("is_impossible")]
    answerable = [e for e in entries if not e[2].get("is_impossible")]
    want_un = min(len(unanswerable), limit // 2)
    want_an = min(len(answerable), limit - want_un)
    want_un = min(len(unanswerable), limit - want_an)
    return sorted(
        rng.sample(answerable, want_an) + rng.sample(unanswerable, want_un), key=lambda e: order[id(e)]
    )


def _squad_case(a: int, p: int, qa: dict[str, Any], title: str, document: DocumentDraft) -> CaseDraft:
    impossible = bool(qa.get("is_impossible", False))
    answers = list(dict.fromkeys(x["text"].strip() for x in qa.get("answers") or [] if x["text"].strip()))
    plausible = [x.get("text", "") for x in qa.get("plausible_answers") or [] if isinstance(x, dict)]
    return CaseDraft(
        question=qa["question"].strip(),
        expected=[] if impossible else answers,
        must_cite=[] if impossible else [document.filename],
        expected_behaviour=Case.Behaviour.ABSTAIN if impossible else Case.Behaviour.ANSWER,
        tags=["squad", "unanswerable" if impossible else "answerable", title],
        notes=f"Plausible but wrong: {plausible[0]!r}" if impossible and plausible else "",
        external_id=str(qa.get("id") or f"{a}-{p}-{qa['question'][:40]}")[:200],
    )


PARSERS = {"jsonl": parse_jsonl, "csv": parse_csv}
