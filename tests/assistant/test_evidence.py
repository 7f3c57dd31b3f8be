"""Evidence selection: which sentences of the retrieved sources answer the question, in any language."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from assistant import evidence
from common.text import Span
from gateway import provider
from tests.fakes import FakeProvider, fake_vector

pytestmark = pytest.mark.django_db  # the fake provider records each embedding call, as the real one does


@dataclass
class Src:
    number: int
    text: str
    title: str = "Policy"
    filename: str = "policy.md"
    chunk_id: int = 0
    document_id: int = 1
    vector_score: float | None = 0.9


def select(question: str, *sources: Src) -> evidence.Selection:
    for source in sources:
        source.chunk_id = source.chunk_id or 100 + source.number
    return evidence.select(question, list(sources), query_vector=fake_vector(question))


POLICY = (
    "Travel must be booked through the travel desk. Expense reports are due on the 5th of each month. "
    "Receipts are scanned and attached in the finance portal."
)


def test_the_sentence_holding_the_answer_comes_first_with_its_offsets() -> None:
    selection = select("When are expense reports due?", Src(1, POLICY))

    best = selection.items[0]
    assert best.text == "Expense reports are due on the 5th of each month."
    assert POLICY[best.start : best.end] == best.text and best.n == 1 and best.chunk_id == 101
    assert selection.embedded and set(selection.features) == set(evidence.STRENGTH_COEFFICIENTS) - {"bias"}
    assert evidence.answer_text(selection).startswith("Expense reports are due on the 5th of each month. [1]")


def test_a_chinese_question_finds_its_sentence() -> None:
    passage = "臺灣位於東亞。第一屆會議於1998年在臺中舉行，共有三百人參加。會議的主題是環境保護。"
    selection = select("第一屆會議在哪裡舉行？", Src(1, passage))
    assert selection.items[0].text == "第一屆會議於1998年在臺中舉行，共有三百人參加。"


def test_mixed_sources_in_two_languages() -> None:
    english = Src(1, "The conference moved to Taichung in 1998. Tickets cost ten dollars.")
    chinese = Src(2, "會議於1998年移到臺中。門票十元。")
    selection = select("Where did the conference move in 1998?", english, chinese)
    assert selection.items[0].n == 1 and "Taichung" in selection.items[0].text


def test_a_table_row_and_a_code_line_are_units() -> None:
    table = "| plan | price per month |\n|---|---|\n| basic | 5 euros |\n| team | 12 euros |\n"
    assert select("What does the team plan cost per month?", Src(1, table)).items[0].text == (
        "| team | 12 euros |"
    )
    code = "def connect(host):\n    timeout = 30\n    retries = 5\n    return open_socket(host, timeout)\n"
    assert select("How many retries does connect make?", Src(1, code)).items[0].text == "retries = 5"


def test_a_web_address_alone_is_not_evidence() -> None:
    licence = (
        "Apache License\n\nhttp://www.apache.org/licenses/LICENSE-2.0\n\n"
        "Each Contributor grants You a patent license to make, use and sell the Work."
    )
    texts = [
        item.text for item in select("What does the Apache License say about patents?", Src(1, licence)).items
    ]
    assert texts and not any(text.startswith("http") for text in texts)


def test_a_long_sentence_is_cut_around_the_best_matching_words() -> None:
    filler = ", ".join(f"clause number {i} of the agreement" for i in range(30))
    sentence = (
        f"Subject to the terms {filler}, each contributor grants a perpetual patent license to make and use."
    )
    selection = select("What patent license does each contributor grant?", Src(1, sentence))
    shown = selection.items[0].text
    assert len(shown) <= evidence.UNIT_CHARS + 2 and shown.startswith("…")
    assert "patent license" in shown
    item = selection.items[0]
    assert sentence[item.start : item.end] in shown.strip("…")


def test_the_same_sentence_twice_is_shown_once() -> None:
    selection = select("When are expense reports due?", Src(1, POLICY), Src(2, POLICY, chunk_id=7))
    texts = [item.text for item in selection.items]
    assert len(texts) == len(set(texts))


def test_an_evidence_answer_is_short() -> None:
    long_sentences = " ".join(
        f"Expense reports for region {i} are due on day {i} of each month." for i in range(40)
    )
    text = evidence.answer_text(select("When are expense reports due?", Src(1, long_sentences)))
    assert len(text) <= evidence.ANSWER_CHARS + 10 and text.endswith("[1]")


def test_without_the_embedding_model_the_words_still_rank_but_nothing_is_strong(
    fake_provider: FakeProvider,
) -> None:
    fake_provider.embed_error = provider.ProviderError("down", kind=provider.ErrorKind.UNAVAILABLE)
    selection = evidence.select(
        "When are expense reports due?", [Src(1, POLICY, chunk_id=1)], query_vector=[0.0]
    )
    assert selection.items[0].text == "Expense reports are due on the 5th of each month."
    assert not selection.embedded and selection.strength == 0.0 and selection.level == "weak"


def test_levels_follow_the_strength(evidence_strength: Callable[[float], None]) -> None:
    evidence_strength(evidence.STRONG)
    assert select("When are expense reports due?", Src(1, POLICY)).level == "strong"
    evidence_strength(evidence.WEAK)
    assert select("When are expense reports due?", Src(1, POLICY)).level == "medium"
    evidence_strength(evidence.WEAK / 2)
    assert select("When are expense reports due?", Src(1, POLICY)).level == "weak"
    assert evidence.Selection().level == "weak"


@pytest.mark.parametrize(("start", "end"), [(0, 10), (5, 40)])
def test_window_keeps_a_short_unit_whole(start: int, end: int) -> None:
    assert evidence.window("x" * 50, Span(start, end), set(), 300) == (start, end)


def test_a_sentence_is_embedded_once_however_often_it_is_retrieved(fake_provider: FakeProvider) -> None:
    select("When are expense reports due?", Src(1, POLICY))
    embedded = len(fake_provider.embedded)
    again = select("Which day are the expense reports due?", Src(1, POLICY))
    assert len(fake_provider.embedded) == embedded  # every sentence's vector was kept
    assert again.items[0].text == "Expense reports are due on the 5th of each month."
