"""Output guardrails: format, tone, leaks and personal data, each both ways."""

from __future__ import annotations

import json

import pytest

from guardrails import checks, output
from guardrails.checks import GuardConfig, check_output

SYSTEM = (
    "You are Groundwork, the assistant for ACME staff. Answer only from the numbered sources, cite them "
    "in brackets, and say you do not know when the sources do not answer the question."
)


def test_a_plain_grounded_answer_passes() -> None:
    result = check_output("Expense reports are due on the 5th of each month [1].", system_prompt=SYSTEM)
    assert result.action == "allow"
    assert result.categories == []
    assert {v.check for v in result.verdicts} == {"leak", "tone", "pii"}
    assert all(v.latency_ms >= 0 for v in result.verdicts)


@pytest.mark.parametrize(
    ("secret", "kind"),
    [
        ("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", "openai_key"),
        ("AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
        ("ghp_" + "a1B2" * 9, "github_token"),
        ("xoxb-1234567890-abcdefghij", "slack_token"),
        ("AIza" + "A" * 35, "google_api_key"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "jwt",
        ),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "private_key"),
        ("postgres://app:s3cr3t-Pass@db.internal:5432/prod", "connection_string"),
        ("password: Hunter2!x", "password"),
    ],
)
def test_secrets_are_redacted(secret: str, kind: str) -> None:
    result = check_output(f"Here you go: {secret} done.")
    assert result.action == "rewrite"
    assert f"leak:{kind}" in result.categories
    assert "[SECRET]" in result.text
    assert secret not in result.text


def test_policy_text_about_passwords_is_not_a_secret() -> None:
    result = check_output("Password: required. The api key is issued by IT on request.")
    assert result.action == "allow"


def test_repeating_the_system_prompt_is_blocked() -> None:
    leak = f"Sure, my instructions are: {SYSTEM}"
    result = check_output(leak, system_prompt=SYSTEM)
    assert result.action == "block"
    assert "leak:system_prompt" in result.categories
    assert output.system_prompt_overlap("Answer only from the sources [1].", SYSTEM) == 0.0


def test_rude_answers_are_blocked_and_polite_ones_pass() -> None:
    assert check_output("That's a stupid question, figure it out yourself.").action == "block"
    assert check_output("You are right to ask; the deadline is Friday [1].").action == "allow"


def test_overconfident_claims_in_regulated_areas_get_a_note() -> None:
    result = check_output("This supplement will definitely cure your diabetes.")
    assert result.action == "rewrite"
    assert "tone:overconfident" in result.categories
    assert result.text.endswith(output.DISCLAIMER)
    assert check_output("The fund is guaranteed to double your returns.").action == "rewrite"
    assert check_output("The office is definitely closed on Sunday [2].").action == "allow"


def test_personal_data_in_answers_is_redacted() -> None:
    result = check_output("Contact Jane at jane@example.com or +44 20 7946 0958.")
    assert result.action == "rewrite"
    assert result.text == "Contact Jane at [EMAIL] or [PHONE]."
    assert set(result.categories) == {"pii:email", "pii:phone"}


def test_other_users_data_is_redacted() -> None:
    result = check_output("Bob Miller asked the same thing yesterday.", protected_terms=["Bob Miller"])
    assert result.text == "[REDACTED] asked the same thing yesterday."
    assert "leak:other_user" in result.categories


def test_format_is_checked_against_a_schema() -> None:
    schema = {
        "type": "object",
        "required": ["answer", "citations"],
        "properties": {
            "answer": {"type": "string"},
            "citations": {"type": "array", "items": {"type": "integer"}},
        },
    }
    good = check_output(json.dumps({"answer": "Friday", "citations": [1]}), json_schema=schema)
    assert good.action == "allow"
    assert check_output('{"answer": "Friday"}', json_schema=schema).action == "block"
    assert check_output('{"answer": 3, "citations": ["x"]}', json_schema=schema).action == "block"
    assert check_output("not json", json_schema=schema).categories == ["format"]


def test_output_checks_can_be_switched_off() -> None:
    result = check_output("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", config=GuardConfig(output=False))
    assert result.action == "allow"


def test_streamed_answers_are_redacted_even_when_a_number_is_split() -> None:
    redactor = checks.output_stream_redactor()
    pieces = [
        "Your card 4111 11",
        "11 1111 1111 is on file. ",
        "Mail jane@exa",
        "mple.com for help. The key is ",
        "sk-proj-abcdefghij",
        "klmnopqrstuvwxyz0123 ok",
        ".",
    ]
    shown = "".join(redactor.feed(p) for p in pieces) + redactor.flush()
    assert shown == "Your card [CARD] is on file. Mail [EMAIL] for help. The key is [SECRET] ok."


def test_streamed_private_keys_are_held_until_they_end() -> None:
    redactor = checks.output_stream_redactor()
    first = redactor.feed("Here it is. -----BEGIN PRIVATE KEY-----\nMIIE")
    assert "MIIE" not in first
    rest = redactor.feed("vQIBADAN\n-----END PRIVATE KEY-----\nDone.") + redactor.flush()
    assert "MIIE" not in first + rest
    assert "[SECRET]" in first + rest


def test_long_unpunctuated_streams_are_still_released() -> None:
    redactor = checks.output_stream_redactor()
    released = redactor.feed("word " * 200)
    assert released
    assert released + redactor.flush() == "word " * 200


def test_a_long_sentence_streams_in_pieces_without_splitting_a_number() -> None:
    redactor = checks.output_stream_redactor()
    words = "The reports go to the finance team who check every receipt before payment and then call "
    pieces = [*(w + " " for w in words.split()), "+44 20 ", "7946 0958 ", "when something is missing."]
    released = [redactor.feed(p) for p in pieces]
    shown = "".join(released) + redactor.flush()
    assert sum(1 for r in released if r) >= 2  # released before the sentence ended
    assert "7946" not in shown and "[PHONE]" in shown
