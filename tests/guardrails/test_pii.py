"""Personal data is found by its validators and redacted; look-alike numbers are left alone."""

from __future__ import annotations

import random

import pytest

from guardrails import pii


@pytest.mark.parametrize(
    ("text", "kind", "placeholder"),
    [
        ("Write to jane.doe+hr@example.co.uk today", "email", "[EMAIL]"),
        ("Call me on +49 30 12345678 please", "phone", "[PHONE]"),
        ("US office: (555) 123-4567", "phone", "[PHONE]"),
        ("Mobil 0171 2345678", "phone", "[PHONE]"),
        ("Card 4111 1111 1111 1111 expired", "card", "[CARD]"),
        ("Amex 3782-822463-10005", "card", "[CARD]"),
        ("Pay to DE89 3704 0044 0532 0130 00 by Friday", "iban", "[IBAN]"),
        ("IBAN GB82WEST12345698765432", "iban", "[IBAN]"),
        ("My SSN is 123-45-6789.", "ssn", "[SSN]"),
        ("SSN: 123456789", "ssn", "[SSN]"),
        ("NI number AB 12 34 56 C", "uk_ni", "[NI_NUMBER]"),
        ("Steuer-ID 86095742719 bitte", "de_tax_id", "[TAX_ID]"),
        ("Steuer-ID 65 929 970 489", "de_tax_id", "[TAX_ID]"),
    ],
)
def test_each_kind_is_redacted(text: str, kind: str, placeholder: str) -> None:
    result = pii.redact(text)
    assert result.kinds == [kind]
    assert placeholder in result.text


@pytest.mark.parametrize(
    "text",
    [
        "Card 4111 1111 1111 1112 fails Luhn",
        "Order 1234567890123456 shipped",  # fails Luhn
        "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum",
        "SSN 000-12-3456 has area 000",
        "SSN 666-12-3456 and 912-12-3456 are never issued",
        "NI QQ 12 34 56 C and GB 12 34 56 A are not issued",
        "Tax 86095742718 has a wrong check digit",
        "The war lasted from 1939-1945, see 2021-03-04 and 12.03.2021",
        "Pi is 3.14159265 and the ISBN is 978-3-16-148410-0",
        "Version 1.2.3.4 runs on port 8080 since 2019",
    ],
)
def test_lookalike_numbers_are_not_personal_data(text: str) -> None:
    assert pii.redact(text).findings == ()


def test_random_sixteen_digit_numbers_failing_luhn_are_not_cards() -> None:
    rng = random.Random(7)
    tried = 0
    while tried < 200:
        digits = "4" + "".join(rng.choice("0123456789") for _ in range(15))
        if pii.luhn_valid(digits):
            continue
        tried += 1
        assert "card" not in pii.redact(f"number {digits} here").kinds


def test_validators() -> None:
    assert pii.luhn_valid("79927398713")
    assert not pii.luhn_valid("79927398710")
    assert pii.iban_valid("DE89 3704 0044 0532 0130 00")
    assert not pii.iban_valid("DE89 3704 0044 0532 0130")  # wrong length for DE
    assert pii.de_tax_id_valid("86095742719")
    assert not pii.de_tax_id_valid("11111111111")


def test_findings_carry_kinds_and_positions_not_values() -> None:
    result = pii.redact("a@b.com and 4111111111111111")
    assert result.counts() == {"email": 1, "card": 1}
    assert all(not hasattr(f, "value") for f in result.findings)
    assert result.text == "[EMAIL] and [CARD]"


def test_only_the_chosen_kinds_are_redacted() -> None:
    result = pii.redact("a@b.com, +49 30 12345678", kinds=["phone"])
    assert result.text == "a@b.com, [PHONE]"
