"""GuardConfig: which guardrail checks run and how strict they are, as an Assistant stores it.

A pydantic model. An assistant stores only the settings that differ from the defaults
(`as_dict`), so that a default can change without a data migration; a stored object that spells
out every setting, as older rows do, reads the same as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator

from guardrails.pii import KINDS as PII_KINDS

# Cosine similarity between question (query) and scope (passage) below which a question is off
# topic, for multilingual-e5-small: permissive on purpose (0.7% of on-topic queries wrongly
# blocked: docs/benchmarks-guardrails.md, "Figures quoted in the code"). Other embedding models
# need their own value.
DEFAULT_TOPIC_THRESHOLD = 0.75

Fraction = Annotated[float, Field(ge=0, le=1, strict=True)]

# What each setting must be, in the words of the error an admin sees.
RULES = {
    "harm": "true or false",
    "injection": "true or false",
    "pii": "true or false",
    "topic": "true or false",
    "output": "true or false",
    "use_moderation": "true or false",
    "classifiers": "true or false",
    "harm_threshold": "a number from 0 to 1",
    "injection_threshold": "a number from 0 to 1",
    "topic_threshold": "a number from 0 to 1",
    "knowledge_match": "a number from 0 to 1",
    "pii_action": "rewrite, redact or block",
    "pii_kinds": f"a list drawn from {', '.join(PII_KINDS)}",
    "max_input_chars": "a whole number from 100 to 1000000",
}


class GuardConfig(BaseModel):
    """Which checks run and how strict they are; an Assistant stores this as JSON (`as_dict`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    harm: StrictBool = True
    injection: StrictBool = True
    pii: StrictBool = True
    topic: StrictBool = True  # only when a scope is given
    output: StrictBool = True  # tone, leaks and personal data in answers
    harm_threshold: Fraction | None = None  # None: the model file's threshold
    injection_threshold: Fraction | None = None
    topic_threshold: Fraction = DEFAULT_TOPIC_THRESHOLD
    # The retrieval similarity at which a close match in the user's own knowledge base vouches for
    # a question the harm classifier alone flagged: the documents they may read hold the answer
    # ("How can I protect my children?" in a health FAQ, which the classifier took for illegal
    # activity), so it is answered with a notice instead of stopped. Rule hits, moderation
    # verdicts and hidden text are never vouched for. 0.85 is the assistant's default
    # `min_similarity` for multilingual-e5-small, below which the pipeline abstains anyway; what
    # it lets through (73 of 913 stopped Do-Not-Answer prompts get a notice) is in
    # docs/benchmarks-guardrails.md, "Figures quoted in the code".
    knowledge_match: Fraction = 0.85
    pii_action: Literal["rewrite", "redact", "block"] = "rewrite"  # redact: send the redacted text silently
    pii_kinds: tuple[str, ...] = PII_KINDS
    max_input_chars: Annotated[StrictInt, Field(ge=100, le=1_000_000)] = 8000
    use_moderation: StrictBool = True  # the provider's moderation endpoint, when it has one
    classifiers: StrictBool = True  # the embedding classifiers; False leaves rules only

    @field_validator("pii_kinds", mode="before")
    @classmethod
    def _known_kinds(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple) or not set(value) <= set(PII_KINDS):
            raise ValueError("unknown kind")
        return tuple(value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GuardConfig:
        """A config from stored JSON; unknown keys and bad values raise ValueError with the reason."""
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError("guardrail settings must be a JSON object")
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"unknown guardrail setting(s): {', '.join(unknown)}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            names = dict.fromkeys(str(error["loc"][0]) for error in exc.errors() if error["loc"])
            raise ValueError("; ".join(f"{name} must be {RULES[name]}" for name in names)) from None

    def as_dict(self) -> dict[str, Any]:
        """The settings that differ from the defaults: what an Assistant stores."""
        return self.model_dump(mode="json", exclude_defaults=True)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every setting with its default, for an admin's help text."""
        return cls().model_dump(mode="json")
