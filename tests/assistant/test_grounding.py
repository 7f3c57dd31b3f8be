"""The lexical grounding check: which sentences of an answer the cited sources support."""

from __future__ import annotations

from assistant import grounding

SOURCE = (
    "Expense reports are due on the 5th of each month. Submit expense reports to the finance team "
    "within 30 days of the purchase, with the receipts attached."
)


def test_a_claim_whose_words_and_numbers_are_in_the_source_is_supported() -> None:
    result = grounding.check("Expense reports are due on the 5th of each month [1].", [SOURCE])
    assert result.grounded is True and result.score == 1.0
    [claim] = result.claims
    assert claim.supported and claim.support == 1.0 and claim.missing == []


def test_words_are_compared_after_light_stemming() -> None:
    # Other forms of the source's "submit", "reports", "receipts", "attached" and "purchase".
    result = grounding.check("Reports are submitted with each receipt attaching purchases.", [SOURCE])
    assert result.grounded is True, result.as_json()
    # Snowball stems, the same family as PostgreSQL's English configuration.
    assert grounding.content_words("policies submitted, reimbursed") == {"polici", "submit", "reimburs"}


def test_a_claim_with_words_the_sources_lack_is_unsupported() -> None:
    answer = "Expense reports are due on the 5th. Managers reimburse travellers in bitcoin immediately."
    result = grounding.check(answer, [SOURCE])
    assert result.grounded is False and result.score == 0.5
    first, second = result.claims
    assert first.supported and not second.supported
    # As the answer wrote them, so staff can find them.
    assert second.missing == ["bitcoin", "immediately", "managers", "reimburse", "travellers"]
    assert second.support == 0.0


def test_every_number_must_appear_in_a_source() -> None:
    # Every word is supported (support 0.875 > 0.6), but 45 is not the source's 30.
    result = grounding.check("Submit expense reports to the finance team within 45 days.", [SOURCE])
    [claim] = result.claims
    assert claim.support >= grounding.SUPPORT_THRESHOLD
    assert claim.supported is False and claim.missing == ["45"]
    assert grounding.check("Submit expense reports within 30 days.", [SOURCE]).grounded is True


def test_support_at_the_threshold_counts_and_below_it_does_not() -> None:
    source = "alpha bravo charlie"
    assert grounding.check("Alpha bravo charlie delta echo.", [source]).claims[0].support == 0.6
    assert grounding.check("Alpha bravo charlie delta echo.", [source]).grounded is True
    assert grounding.check("Alpha bravo delta echo foxtrot.", [source]).grounded is False


def test_without_sources_nothing_is_grounded() -> None:
    result = grounding.check("Expense reports are due on the 5th of each month.", [])
    assert result.grounded is False and result.score == 0.0
    assert [c.supported for c in result.claims] == [False]
    assert grounding.check("Yes.", []).grounded is False


def test_short_fragments_assert_nothing_checkable() -> None:
    answer = "Yes. In short. Expense reports are due on the 5th of each month. Hope this helps!"
    assert grounding.split_claims(answer) == ["Expense reports are due on the 5th of each month."]
    assert grounding.check("Yes, indeed.", [SOURCE]).claims == []
    assert grounding.check("Yes, indeed.", [SOURCE]).grounded is True


def test_an_answer_of_fragments_only_is_checked_as_a_whole() -> None:
    # A tiny model's echo of the prompt, and a tautology: nothing in them is a three-word claim.
    echo = grounding.check("Your answer, citing sources like [1]", [SOURCE])
    assert echo.grounded is False and echo.claims[0].text == "Your answer, citing sources like"
    assert grounding.check("The CEO is the CEO.", [SOURCE]).grounded is False
    assert grounding.check("On the 5th. Weekly!", [SOURCE]).grounded is False  # "weekly" is not there
    assert grounding.check("On the 5th [1].", [SOURCE]).grounded is True


def test_citation_marks_are_not_claims_or_numbers() -> None:
    answer = "Expense reports are due on the 5th of each month [1, 2]. Receipts go attached [Source 3]."
    # "Receipts go attached" is left with two content words once its mark is gone.
    assert grounding.split_claims(answer) == ["Expense reports are due on the 5th of each month ."]
    assert grounding.check(answer, [SOURCE]).grounded is True
    assert grounding.cited_numbers(answer) == [1, 2, 3]
    assert grounding.cited_numbers("See [2] and [source 2; 4], not [x] or (5).") == [2, 4]


def test_claims_split_at_sentence_ends() -> None:
    answer = "Reports are due monthly on the 5th! Are receipts needed with every report? Yes, always."
    assert grounding.split_claims(answer) == [
        "Reports are due monthly on the 5th!",
        "Are receipts needed with every report?",
    ]


def test_as_json_lists_each_claim() -> None:
    data = grounding.check("Managers reimburse travellers in bitcoin.", [SOURCE]).as_json()
    assert data["grounded"] is False and data["method"] == "lexical" and data["score"] == 0.0
    assert data["claims"] == [
        {
            "text": "Managers reimburse travellers in bitcoin.",
            "support": 0.0,
            "supported": False,
            "missing": ["bitcoin", "managers", "reimburse", "travellers"],
        }
    ]


def test_the_supporting_quote_is_the_matching_sentence_of_the_source() -> None:
    source = "Expense reports are due on the 5th.\nMeals are paid up to 40 euros a day. Taxis are not."
    claims = grounding.claims_citing("Meals are paid up to 40 euros [2]. Reports are due on the 5th [1].", 2)
    assert claims == ["Meals are paid up to 40 euros."]
    assert grounding.supporting_quote(claims, source) == "Meals are paid up to 40 euros a day."
    # No overlap at all: the start of the source.
    assert grounding.supporting_quote(["Bicycles are green."], source) == source[:600].strip()


def test_a_negated_claim_is_not_supported_by_its_positive() -> None:
    source = "You may distribute copies of the Work in any medium, with or without modifications."
    assert grounding.check("You may distribute copies of the Work in any medium [1].", [source]).grounded
    result = grounding.check("You may not distribute copies of the Work in any medium [1].", [source])
    assert result.grounded is False and result.claims[0].missing == [grounding.NEGATION_MISMATCH]
    # And the other way round; a reply's leading "No," is not a negation of the claim.
    forbidden = "You may not distribute copies of the Work without permission."
    assert not grounding.check(
        "You may distribute copies of the Work without permission.", [forbidden]
    ).grounded
    assert grounding.check("No, you may not distribute copies of the Work.", [forbidden]).grounded


def test_chinese_claims_are_checked_phrase_by_phrase() -> None:
    source = "臺北市是中華民國的首都，位於臺灣北部。第一屆會議於1998年在臺中舉行。"
    assert grounding.check("第一屆會議於1998年在臺中舉行。[1]", [source]).grounded
    # Not one long word: a claim with a different city and year is caught.
    wrong = grounding.check("第一屆會議於2003年在高雄舉行。", [source])
    assert wrong.grounded is False and "2003" in wrong.claims[0].missing
    assert grounding.split_claims("臺北市是首都。第一屆會議在臺中舉行！") == [
        "臺北市是首都。",
        "第一屆會議在臺中舉行！",
    ]


def test_a_chinese_negation_is_not_supported_by_its_positive() -> None:
    source = "使用者得於非商業目的下自由散布本軟體。"
    assert grounding.check("使用者得自由散布本軟體。", [source]).grounded
    result = grounding.check("使用者不得自由散布本軟體。", [source])
    assert result.grounded is False and grounding.NEGATION_MISMATCH in result.claims[0].missing
