"""Output rules: format, tone, leaks (system prompt, secrets, other people's data) and personal data.

All of these are deterministic and cheap; they run on the model's answer before anyone sees
it or it is stored. Secrets and personal data are redacted; an answer that repeats the system
prompt or insults the user is withheld; overconfident claims in medical, legal and financial
matters get a note that they are general information, not a guarantee.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

_F = re.IGNORECASE

SECRETS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)"  # noqa: E501
        ),
    ),
    ("openai_key", re.compile(r"\bsk-(?:proj-|live-|test-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")),
    ("stripe_key", re.compile(r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}")),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})")),
    ("slack_token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("groundwork_token", re.compile(r"\bgw_[A-Za-z0-9_-]{40,}")),
)
# Only the value is redacted, so the answer still says what kind of thing was there.
SECRET_VALUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "password",
        re.compile(
            r"\b(?:password|passwd|pwd|passwort|kennwort|secret|api[_ -]?key|access[_ -]?token|auth[_ -]?token|client[_ -]?secret)\b\s*(?:is|ist|:|=)\s*[\"'`]?([^\s\"'`,;]{6,})",  # noqa: E501
            _F,
        ),
    ),
    ("connection_string", re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:([^\s:/@]+)@[^\s/]+", _F)),
)

RUDE = re.compile(
    r"\b(?:you(?:'re| are)?|your)\b[^.!?\n]{0,25}?\b(?:stupid|idiot\w*|moron\w*|dumb|pathetic|clueless|"
    r"incompetent|ignorant|lazy|useless|worthless)\b"
    r"|\b(?:shut up|figure it out yourself|google it yourself|what a (?:stupid|dumb|silly) question|"
    r"(?:stupid|dumb|silly|idiotic) question|learn to read|are you serious\?|obviously you (?:don't|do not))"
    r"|\b(?:fuck\w*|shit\w*|bullshit|asshole|bastard|scheiße|scheisse|arschloch|dummkopf|halt die klappe)\b",
    _F,
)
OVERCONFIDENT = re.compile(
    r"\b(?:guaranteed?|guarantees|definitely|certainly|surely|100 ?%|risk-?free|sure-?fire|can(?:not|'t) lose|"  # noqa: E501
    r"no risk|always works|never fails|garantiert|auf jeden fall|sicher)\b[^.!?\n]{0,60}?\b(?:cure[sd]?|heal\w*|"  # noqa: E501
    r"treat\w*|disease|cancer|diabetes|medication|dose|dosage|returns?|profits?|gains?|invest\w*|stocks?|"
    r"crypto\w*|win (?:the|your) case|lawsuit|court|acquit\w*|legal\w*|heilt|heilen|rendite|gewinn\w*|prozess)\b"  # noqa: E501
    r"|\b(?:cure[sd]?|heal\w*|returns?|profits?|win (?:the|your) case)\b[^.!?\n]{0,40}?\b(?:guaranteed|definitely|"  # noqa: E501
    r"for sure|100 ?%|without (?:any )?risk)\b"
    r"|\bno need to (?:see|consult|ask|talk to) (?:a|your) (?:doctor|lawyer|attorney|adviser|advisor|physician)\b"  # noqa: E501
    r"|\b(?:definitely|certainly) (?:cure|heal|win|double|triple)\b",
    _F,
)
DISCLAIMER = (
    "Note: this is general information, not a guarantee or professional advice; for your own situation, "
    "ask a qualified professional."
)
_WORDS = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Redaction:
    text: str
    kinds: tuple[str, ...]


def redact_secrets(text: str) -> Redaction:
    kinds: list[str] = []
    for kind, pattern in SECRETS:
        text, n = pattern.subn("[SECRET]", text)
        if n:
            kinds.append(kind)
    for kind, pattern in SECRET_VALUES:

        def value_only(m: re.Match[str]) -> str:
            value = m.group(1).rstrip(".!?:)")
            # "Password: required" is policy text, not a password; "[SECRET]" is already redacted.
            if (value.isalpha() and value.islower() and len(value) < 12) or value.startswith("["):
                return m.group(0)
            kinds.append(kind)  # noqa: B023
            return m.group(0)[: m.start(1) - m.start(0)] + "[SECRET]" + m.group(0)[m.end(1) - m.start(0) :]

        text = pattern.sub(value_only, text)
    return Redaction(text, tuple(dict.fromkeys(kinds)))


def redact_terms(text: str, terms: Iterable[str]) -> Redaction:
    """Other people's identifiers (names, e-mail addresses) the caller says must not appear."""
    found = False
    for term in sorted({t.strip() for t in terms if t and len(t.strip()) >= 3}, key=len, reverse=True):
        text, n = re.subn(rf"(?<!\w){re.escape(term)}(?!\w)", "[REDACTED]", text, flags=_F)
        found = found or bool(n)
    return Redaction(text, ("other_user",) if found else ())


def system_prompt_overlap(text: str, system_prompt: str, *, run: int = 10) -> float:
    """Share of the system prompt's `run`-word sequences that the text repeats (0..1).

    Any repeated run of `run` words is already a leak; short prompts count when repeated whole.
    """
    prompt = [w.lower() for w in _WORDS.findall(system_prompt)]
    if not prompt:
        return 0.0
    words = [w.lower() for w in _WORDS.findall(text)]
    size = min(run, len(prompt))
    if size < 4:
        return 0.0
    prompt_grams = {tuple(prompt[i : i + size]) for i in range(len(prompt) - size + 1)}
    text_grams = {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}
    return len(prompt_grams & text_grams) / len(prompt_grams)


def rude(text: str) -> bool:
    return bool(RUDE.search(text))


def overconfident(text: str) -> bool:
    return bool(OVERCONFIDENT.search(text))


# --- format --------------------------------------------------------------------------------------

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Problems with `value` against a JSON schema (type, enum, required, properties, items, bounds)."""
    errors: list[str] = []
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        ok = any(
            isinstance(value, _TYPES.get(name, (object,)))
            and not (name in {"integer", "number"} and isinstance(value, bool))
            for name in names
        )
        if not ok:
            return [f"{path}: expected {'/'.join(names)}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: not one of {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: above {schema['maximum']}")
    if isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing {key!r}")
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                errors.extend(schema_errors(item, properties[key], f"{path}.{key}"))
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected {key!r}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors.extend(schema_errors(item, schema["items"], f"{path}[{i}]"))
    return errors


def format_errors(text: str, schema: dict[str, Any]) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return [f"not JSON: {exc.msg} at character {exc.pos}"]
    return schema_errors(value, schema)


# --- streaming -----------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?:;\n])\s+")
_SAFE_SPACE = re.compile(r"(?<![\d:=])\s+(?![\d\[])")


class StreamRedactor:
    """Redact secrets and personal data from text that arrives in pieces (a streamed answer).

    Text is released a sentence at a time, so a card number or a key split across two pieces is
    still seen whole; a private-key block is held until it ends. `flush()` releases the rest.
    Tone and system-prompt leaks need the whole answer: run check_output on it at the end.
    """

    MAX_HOLD = 400
    # Between sentence ends, text is released at a space when at least this much stays behind it
    # (longer than any spaced token: an IBAN with its spaces is at most 42 characters) and when
    # redacting both sides apart gives what redacting them together gives, so no token is split.
    LOOKAHEAD = 48
    TRIES = 3

    def __init__(self, redact: Callable[[str], str]) -> None:
        self._redact = redact
        self._buffer = ""

    def feed(self, piece: str) -> str:
        self._buffer += piece
        if "-----BEGIN" in self._buffer and "PRIVATE KEY" in self._buffer:
            start = self._buffer.index("-----BEGIN")
            if "-----END" not in self._buffer[start:]:
                head, self._buffer = self._buffer[:start], self._buffer[start:]
                return self._redact(head) if head else ""
        cut = 0
        for match in _SENTENCE_END.finditer(self._buffer):
            cut = match.end()
        if cut == 0 and len(self._buffer) > self.LOOKAHEAD:
            cut = self._verified_cut()
        if cut == 0 and len(self._buffer) > self.MAX_HOLD:
            for match in _SAFE_SPACE.finditer(self._buffer, 0, len(self._buffer) - 80):
                cut = match.end()
        if cut == 0:
            return ""
        ready, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return self._redact(ready)

    def _verified_cut(self) -> int:
        candidates = list(_SAFE_SPACE.finditer(self._buffer, 0, len(self._buffer) - self.LOOKAHEAD))
        if not candidates:
            return 0
        whole = self._redact(self._buffer)
        for match in reversed(candidates[-self.TRIES :]):
            head, tail = self._buffer[: match.end()], self._buffer[match.end() :]
            if self._redact(head) + self._redact(tail) == whole:
                return match.end()
        return 0

    def flush(self) -> str:
        rest, self._buffer = self._buffer, ""
        return self._redact(rest) if rest else ""
