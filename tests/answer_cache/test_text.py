"""How questions are keyed and compared word by word (answer_cache.text)."""

from __future__ import annotations

from answer_cache.text import content_terms, exact_key, word_overlap


def test_the_exact_key_drops_what_never_changes_the_question() -> None:
    key = exact_key("When are expense reports due?")
    assert exact_key("  when are EXPENSE reports due?? ") == key
    assert exact_key("When are expense reports due, please?") == key
    assert exact_key("Hi, please: when are expense reports due? Thanks!") == key
    assert exact_key("What’s the refund policy") == exact_key("what is the refund policy")
    assert exact_key("I can't log in") == exact_key("i cannot log in")


def test_the_exact_key_keeps_what_does_change_it() -> None:
    assert exact_key("C++ or C#?") == "c++ or c#"
    assert exact_key("C++ or C#?") != exact_key("C or C?")
    assert exact_key("What is 3 - 2?") != exact_key("What is 3 2?")
    assert exact_key("What is 3.5?") != exact_key("What is 35?")
    assert exact_key("When are reports due?") != exact_key("Where are reports due?")
    assert exact_key("Please send the form") == "send the form"  # only a leading courtesy goes
    assert exact_key("please") == "please"  # never an empty key


def test_content_terms_keep_question_words_negations_and_numbers() -> None:
    assert content_terms("How much is the 2024 plan, please?") >= {"how_much", "2024", "plan"}
    assert "pleas" not in content_terms("Can you please turn the volume down")
    assert "not" in content_terms("Why can't I log in?") and "why" in content_terms("Why can't I log in?")
    assert content_terms("When do I get paid?") != content_terms("What do I get paid?")


def test_word_overlap_is_high_for_a_rewording_and_low_for_another_question() -> None:
    assert word_overlap("When are expense reports due?", "when are the expense reports due") == 1.0
    assert word_overlap("When are expense reports due?", "When are salary reviews due?") < 0.5
    assert word_overlap("when do i get paid", "what do i get paid") < 1.0
    assert word_overlap("", "") == 1.0
