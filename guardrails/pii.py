"""Personal data: find it, check it with the number's own validator, and redact it.

Numbers are only called a card, IBAN or tax id when their check digits agree (Luhn, mod-97,
ISO 7064), so a random 16-digit order number is left alone. What is found is reported by
kind and position, never by value, so a finding can be logged without leaking it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

KINDS = ("email", "phone", "card", "iban", "ssn", "uk_ni", "de_tax_id")
PLACEHOLDERS = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "card": "[CARD]",
    "iban": "[IBAN]",
    "ssn": "[SSN]",
    "uk_ni": "[NI_NUMBER]",
    "de_tax_id": "[TAX_ID]",
}

# IBAN length per country (ISO 13616 registry, the common part).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18,
    "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip

EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b"
)
IBAN = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30})(?![A-Za-z0-9])")
CARD = re.compile(r"(?<![\d-])(\d(?:[ -]?\d){12,18})(?![\d-])")
SSN = re.compile(r"(?<![\d-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\d-])")
SSN_LABELLED = re.compile(r"(?i)\b(?:ssn|social security(?: number| no\.?| #)?)\W{0,3}(\d{9})(?!\d)")
UK_NI = re.compile(
    r"(?<![A-Za-z0-9])([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?(\d{2}) ?(\d{2}) ?(\d{2}) ?([A-D])(?![A-Za-z0-9])"  # noqa: E501
)
DE_TAX_ID = re.compile(r"(?<![\d-])([1-9]\d(?: ?\d){9})(?![\d-])")
PHONE = re.compile(r"(?<![\w+])((?:\+|00)[1-9][\d ()./-]{6,22}\d|\(?\d[\d ()./-]{6,20}\d)(?!\w)")
NANP = re.compile(r"\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}")
DATE_LIKE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\d{4} ?[-/] ?\d{4}")
UK_NI_INVALID_PREFIXES = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class PiiResult:
    text: str  # the input with every finding replaced by its placeholder
    findings: tuple[Finding, ...]

    @property
    def kinds(self) -> list[str]:
        return sorted({f.kind for f in self.findings})

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.findings))


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_valid(digits: str) -> bool:
    """A payment card number: 13-19 digits, a known network's first digit, and the Luhn check."""
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    # 2 and 5: Mastercard, 3: Amex/Diners/JCB, 4: Visa, 6: Discover/Maestro/UnionPay.
    return digits[0] in "23456" and luhn_valid(digits)


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is None or len(compact) != expected or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    return (
        not (area in {"000", "666"} or area.startswith("9") or group == "00" or serial == "0000")
        and len({*area, *group, *serial}) > 1
    )


def de_tax_id_valid(digits: str) -> bool:
    """German Steuerliche Identifikationsnummer: digit pattern plus ISO 7064 MOD 11,10 check digit."""
    if len(digits) != 11 or digits[0] == "0":
        return False
    counts = Counter(digits[:10])
    # Exactly one digit repeats (twice, or three times since 2016, never adjacent thrice).
    repeated = [d for d, n in counts.items() if n > 1]
    if len(repeated) != 1 or counts[repeated[0]] > 3:
        return False
    if counts[repeated[0]] == 3 and repeated[0] * 3 in digits[:10]:
        return False
    product = 10
    for char in digits[:10]:
        total = (int(char) + product) % 10 or 10
        product = (total * 2) % 11
    check = 11 - product
    return (0 if check == 10 else check) == int(digits[10])


def _phone_valid(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    if len(set(digits)) <= 2:
        return False
    if candidate.startswith("+") or re.match(r"00[1-9]", candidate):
        return 8 <= len(digits) <= 15
    if DATE_LIKE.fullmatch(candidate.strip("() ")):
        return False
    if NANP.fullmatch(candidate):
        return len(digits) == 10
    # A national number with a trunk prefix: 0 then 9-11 digits, usually grouped.
    return digits.startswith("0") and 10 <= len(digits) <= 12 and candidate.count("0") < len(digits)


Detector = Callable[[str], Iterable[tuple[int, int]]]


def _emails(text: str) -> Iterable[tuple[int, int]]:
    for m in EMAIL.finditer(text):
        yield m.span()


def _ibans(text: str) -> Iterable[tuple[int, int]]:
    for m in IBAN.finditer(text):
        candidate = m.group(1)
        # The greedy match may run into the next word ("DE89 3704 ... 00 Thanks"): try shorter.
        parts = candidate.split(" ")
        for n in range(len(parts), 0, -1):
            joined = " ".join(parts[:n])
            if iban_valid(joined):
                yield m.start(1), m.start(1) + len(joined)
                break


def _cards(text: str) -> Iterable[tuple[int, int]]:
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group(1))
        if card_valid(digits):
            yield m.span(1)


def _ssns(text: str) -> Iterable[tuple[int, int]]:
    for m in SSN.finditer(text):
        if ssn_valid(m.group(1), m.group(3), m.group(4)):
            yield m.span()
    for m in SSN_LABELLED.finditer(text):
        digits = m.group(1)
        if ssn_valid(digits[:3], digits[3:5], digits[5:]):
            yield m.span(1)


def _uk_ni(text: str) -> Iterable[tuple[int, int]]:
    for m in UK_NI.finditer(text):
        if m.group(1).upper() not in UK_NI_INVALID_PREFIXES:
            yield m.span()


def _de_tax_ids(text: str) -> Iterable[tuple[int, int]]:
    for m in DE_TAX_ID.finditer(text):
        if de_tax_id_valid(m.group(1).replace(" ", "")):
            yield m.span(1)


def _phones(text: str) -> Iterable[tuple[int, int]]:
    for m in PHONE.finditer(text):
        candidate = m.group(1).rstrip(" ./-(")
        if candidate.startswith("(") and ")" not in candidate:
            candidate = candidate[1:]
        if _phone_valid(candidate):
            start = m.start(1) + m.group(1).index(candidate)
            yield start, start + len(candidate)


# Most specific first: a span claimed by one kind is not looked at again.
DETECTORS: tuple[tuple[str, Detector], ...] = (
    ("email", _emails),
    ("iban", _ibans),
    ("card", _cards),
    ("ssn", _ssns),
    ("uk_ni", _uk_ni),
    ("de_tax_id", _de_tax_ids),
    ("phone", _phones),
)


def find(text: str, kinds: Iterable[str] = KINDS) -> list[Finding]:
    wanted = set(kinds)
    claimed: list[Finding] = []
    for kind, detect in DETECTORS:
        if kind not in wanted:
            continue
        for start, end in detect(text):
            if any(start < f.end and f.start < end for f in claimed):
                continue
            claimed.append(Finding(kind, start, end))
    return sorted(claimed, key=lambda f: f.start)


def redact(text: str, kinds: Iterable[str] = KINDS) -> PiiResult:
    """`text` with personal data replaced by placeholders such as [EMAIL] and [CARD]."""
    findings = find(text, kinds)
    if not findings:
        return PiiResult(text=text, findings=())
    parts: list[str] = []
    position = 0
    for finding in findings:
        parts.append(text[position : finding.start])
        parts.append(PLACEHOLDERS[finding.kind])
        position = finding.end
    parts.append(text[position:])
    return PiiResult(text="".join(parts), findings=tuple(findings))
