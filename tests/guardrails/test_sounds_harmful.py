"""The hand-written development set: its split is the documented one, and nothing held out trains."""

from __future__ import annotations

from collections import defaultdict

from guardrails import training

ISSUE_GROUPS = {"i01", "p01"}  # issue 16's BSD and Apache questions, held out on purpose


def test_rows_are_well_formed() -> None:
    records = training.sounds_harmful_records()
    assert len(records) >= 400
    assert len({r.id for r in records}) == len(records)
    assert {r.label for r in records} == {"safe", "unsafe"}
    assert {r.lang for r in records} == {"en", "zh-Hant", "zh-Hans"}
    assert {r.category for r in records} == set(training.HARM_CATEGORIES)
    assert {r.split for r in records} == {"train", "held_out"}
    assert all(r.text.strip() for r in records)


def test_the_split_is_by_group_as_documented() -> None:
    splits: dict[str, set[str]] = defaultdict(set)
    for record in training.sounds_harmful_records():
        splits[record.group].add(record.split)
        if record.batch == 2 or record.group in ISSUE_GROUPS:
            assert record.split == "held_out", record.id
        else:
            hashed = "held_out" if training.split_of(f"group:{record.group}") == "test" else "train"
            assert record.split == hashed, record.id
    # Translations of one prompt never straddle the split.
    assert all(len(sides) == 1 for sides in splits.values())


def test_held_out_rows_are_not_in_the_training_part() -> None:
    rows = training.sounds_harmful()
    held_out = {r.text for r in training.sounds_harmful_records() if r.split == "held_out"}
    assert {r.text for r in rows if r.split == "test"} == held_out
    assert not {r.text for r in rows if r.split == "train"} & held_out
    # Safe rows are benign; unsafe ones carry their harm category.
    assert {r.harm for r in rows} <= {training.BENIGN, *training.HARM_CATEGORIES}
