"""The model's JSON answer: its "answer" field pulled out as it streams, and the whole validated."""

from __future__ import annotations

import re

from pydantic import ValidationError

from assistant import grounding
from assistant.prompts import AnswerPayload


class AnswerFieldStream:
    """Pulls the text of the "answer" field out of a JSON object as it streams in."""

    START = re.compile(r'"answer"\s*:\s*"')
    ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}  # others stand for themselves

    def __init__(self) -> None:
        self.raw = ""
        self.position: int | None = None
        self.closed = False

    def feed(self, text: str) -> str:
        self.raw += text
        if self.closed:
            return ""
        if self.position is None:
            match = self.START.search(self.raw)
            if not match:
                return ""
            self.position = match.end()
        out: list[str] = []
        i = self.position
        while i < len(self.raw):
            char = self.raw[i]
            if char == '"':
                self.closed = True
                i += 1
                break
            if char == "\\":
                if i + 1 >= len(self.raw):
                    break
                escape = self.raw[i + 1]
                if escape == "u":
                    decoded, used = self._unicode_escape(i)
                    if used == 0:
                        break  # the rest of the escape has not arrived yet
                    out.append(decoded)
                    i += used
                    continue
                out.append(self.ESCAPES.get(escape, escape))
                i += 2
                continue
            out.append(char)
            i += 1
        self.position = i
        return "".join(out)

    def _unicode_escape(self, i: int) -> tuple[str, int]:
        """The character of the \\uXXXX escape at `i` and how many characters it took (0: incomplete).

        A character outside the BMP comes as a surrogate pair, two escapes that make one
        character; halves on their own could not be encoded for the page, so they become U+FFFD.
        """
        code = self._hex4(i)
        if code is None:
            return "", 0
        if code < 0:
            return "", 6  # a malformed escape is dropped
        if 0xD800 <= code < 0xDC00:
            following = self.raw[i + 6 : i + 12]
            if not "\\u".startswith(following[:2]):
                return "\ufffd", 6
            if len(following) < 6:
                return "", 0
            low = self._hex4(i + 6)
            if low is not None and 0xDC00 <= low < 0xE000:
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), 12
            return "\ufffd", 6
        if 0xDC00 <= code < 0xE000:
            return "\ufffd", 6
        return chr(code), 6

    def _hex4(self, i: int) -> int | None:
        """The value of the four hex digits after "\\u" at `i`; None if not all here yet, -1 if malformed."""
        if i + 6 > len(self.raw):
            return None
        digits = self.raw[i + 2 : i + 6]
        if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
            return -1
        return int(digits, 16)


def parse_payload(raw: str, source_count: int) -> tuple[AnswerPayload | None, str]:
    """The validated payload, or None and what was wrong with it (for the repair prompt)."""
    text = raw.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        payload = AnswerPayload.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        return None, f"it was not valid JSON for the schema ({first['msg']} at {first.get('loc')})."
    # A mark like [2] in the text is a citation too: the reader sees it whether or not it is listed.
    numbers = list(dict.fromkeys([*payload.citations, *grounding.cited_numbers(payload.answer)]))
    unknown = [n for n in numbers if not 1 <= n <= source_count]
    if unknown:
        return None, f"it cited source(s) {unknown}, but only sources 1 to {source_count} exist."
    payload.citations = numbers
    return payload, ""
