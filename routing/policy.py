"""Which model answers a question: a routing policy per assistant, and the decision with its reason.

The answer pipeline asks `route_decide` for the model once retrieval has scored the context
(before the tool rounds; a replay or evaluation run passes its pinned model), calls the model
through routing.fallback, and records `Decision.as_json()` on Answer.route.

A policy is `Assistant.routing`, a JSON object; an empty one means "always the assistant's own
model". `RoutingPolicy` is a pydantic model: `from_dict` validates it and raises
RoutingConfigError listing every problem in words an admin can act on
(`routing_config_errors(value)` returns them as a list, for an admin form's clean_routing), and
`as_dict` is what is stored: only the settings that differ from the defaults, so that a new
default reaches every assistant without a data migration.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from assistant.models import Assistant
from routing.features import QUESTION_TYPES, VECTOR_NAMES, Features, question_features

CLASSIFIER_PATH = Path(__file__).resolve().parent / "data" / "classifier.json"
CHEAP, STRONG, FALLBACK, FIXED = "cheap", "strong", "fallback", "fixed"
ROUTES = (CHEAP, STRONG, FALLBACK, FIXED)
EXAMPLE = {
    "cheap_model": "gpt-4o-mini",
    "strong_model": "gpt-4o",
    "fallback_models": ["gpt-4o-mini"],
    "strong_threshold": 0.5,
    "min_retrieval_score": 0.87,
    "max_cheap_words": 40,
    "max_cheap_questions": 1,
    "strong_types": ["comparison", "multi_step"],
    "use_classifier": True,
    "timeout_seconds": 30,
}


class RoutingConfigError(ValueError):
    """An assistant's routing settings cannot be used; `errors` says why, one problem each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("Routing settings: " + " ".join(errors))
        self.errors = errors


def _model_name(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _names(value: Any) -> Any:
    """A list of non-empty names, stripped, duplicates dropped (order kept)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError("not a list of names")
    return tuple(dict.fromkeys(v.strip() for v in value))


ModelName = Annotated[StrictStr, BeforeValidator(_model_name), Field(min_length=1)]
Names = Annotated[tuple[str, ...], BeforeValidator(_names)]

# What each setting must be, in the words of the error an admin sees.
RULES = {
    "cheap_model": "a model name (text) and is required",
    "strong_model": "a model name (text) and is required",
    "fallback_models": "a list of names",
    "strong_threshold": "a number from 0 to 1",
    "min_retrieval_score": "a number from -1 to 1",
    "max_cheap_words": "a whole number from 1 to 100000",
    "max_cheap_questions": "a whole number from 1 to 100",
    "strong_types": "a list of names",
    "use_classifier": "true or false",
    "timeout_seconds": "a number from 1 to 600",
}


class RoutingPolicy(BaseModel):
    """An assistant's routing settings; it stores only those that differ from the defaults (`as_dict`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cheap_model: ModelName
    strong_model: ModelName
    fallback_models: Names = ()
    # The classifier's probability of "needs the strong model" at or above which it is used.
    strong_threshold: Annotated[float, Field(ge=0, le=1, strict=True)] = 0.5
    # Below this best vector similarity the context is marginal: the strong model copes better.
    # multilingual-e5-small scored relevant passages 0.87-0.92: docs/benchmarks-routing.md,
    # "Figures quoted in the code".
    min_retrieval_score: Annotated[float, Field(ge=-1, le=1, strict=True)] = 0.87
    max_cheap_words: Annotated[StrictInt, Field(ge=1, le=100_000)] = 40
    max_cheap_questions: Annotated[StrictInt, Field(ge=1, le=100)] = 1
    strong_types: Names = ("comparison", "multi_step")
    use_classifier: StrictBool = True
    timeout_seconds: Annotated[float, Field(ge=1, le=600, strict=True)] | None = None

    @field_validator("strong_types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        wrong = [v for v in value if v not in QUESTION_TYPES]
        if wrong:
            raise ValueError(f"unknown question type(s) {wrong}; use {', '.join(QUESTION_TYPES)}.")
        return value

    @classmethod
    def from_dict(cls, value: Any) -> RoutingPolicy | None:
        """The policy in `value` (Assistant.routing), None when it is empty, or RoutingConfigError."""
        if value in (None, {}):
            return None
        if not isinstance(value, dict):
            raise RoutingConfigError([f"must be a JSON object like {json.dumps(EXAMPLE)}, not {value!r}."])
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise RoutingConfigError(_explain(exc, value)) from None

    def as_dict(self) -> dict[str, Any]:
        """The settings that differ from the defaults: what Assistant.routing stores."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def as_json(self) -> dict[str, Any]:
        """Every setting, defaults included: what the routing page shows."""
        return self.model_dump(mode="json")

    def fallbacks_for(self, model: str) -> tuple[str, ...]:
        """The models to try, in order, when `model` fails: the configured list, else the other tier."""
        chain = self.fallback_models or (
            (self.strong_model,) if model == self.cheap_model else (self.cheap_model,)
        )
        return tuple(m for m in dict.fromkeys(chain) if m != model)


def _explain(exc: ValidationError, value: dict[str, Any]) -> list[str]:
    """One sentence per setting that is wrong, in the order the settings are declared."""
    errors: list[str] = []
    for error in exc.errors():
        key = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "extra_forbidden":
            known = ", ".join(sorted(RoutingPolicy.model_fields))
            errors.append(f"unknown setting {key!r} (known: {known}).")
        elif str(error.get("ctx", {}).get("error", "")).startswith("unknown question type"):
            errors.append(f"{key}: {error['ctx']['error']}")
        elif key in value:
            errors.append(f"{key} must be {RULES[key]}, not {value[key]!r}.")
        else:
            errors.append(f"{key} must be {RULES[key]}.")
    return list(dict.fromkeys(errors))


def routing_config_errors(value: Any) -> list[str]:
    """What is wrong with an Assistant.routing value ([] when it is usable). For admin forms."""
    try:
        RoutingPolicy.from_dict(value)
    except RoutingConfigError as exc:
        return exc.errors
    return []


@dataclass(frozen=True)
class Decision:
    model: str
    route: str  # cheap, strong, fallback, fixed
    reason: str
    features: dict[str, Any] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()
    timeout: float | None = None
    fallback_from: str | None = None
    attempts: tuple[dict[str, str], ...] = ()

    def candidates(self) -> tuple[str, ...]:
        return (self.model, *self.fallbacks)

    def fell_back(self, model: str, attempts: list[dict[str, str]]) -> Decision:
        """This decision after the models in `attempts` failed and `model` answered instead."""
        failed = "; ".join(f"{a['model']}: {a['kind']}" for a in attempts)
        return replace(
            self,
            model=model,
            route=FALLBACK,
            reason=f"{self.reason} Fell back to {model} after {failed}.",
            fallback_from=self.fallback_from or attempts[0]["model"],
            fallbacks=tuple(m for m in self.fallbacks if m not in {model, *(a["model"] for a in attempts)}),
            attempts=self.attempts + tuple(attempts),
        )

    def as_json(self) -> dict[str, Any]:
        """The record kept on Answer.route."""
        record: dict[str, Any] = {
            "route": self.route,
            "model": self.model,
            "reason": self.reason,
            "features": self.features,
            "fallback_from": self.fallback_from,
        }
        if self.attempts:
            record["attempts"] = list(self.attempts)
        return record


@cache
def classifier() -> tuple[list[float], float]:
    """The fitted weights and bias (routing/data/classifier.json, written by `manage.py train_router`)."""
    data = json.loads(CLASSIFIER_PATH.read_text(encoding="utf-8"))
    if data.get("features") != VECTOR_NAMES:
        raise RuntimeError(f"{CLASSIFIER_PATH} was trained on other features; run `manage.py train_router`.")
    return [float(w) for w in data["weights"]], float(data["bias"])


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-max(min(value, 50.0), -50.0)))


def strong_probability(features: Features) -> float:
    weights, bias = classifier()
    return sigmoid(sum(w * x for w, x in zip(weights, features.vector(), strict=True)) + bias)


def _describe(f: Features) -> str:
    clauses = f"{f.clauses} clause{'s' if f.clauses != 1 else ''}"
    return f"a {f.question_type.replace('_', '-')} question of {f.words} words, {clauses}"


def route_decide(
    *,
    assistant: Assistant,
    question: str,
    retrieval_score: float | None,
    history: list[tuple[str, str]] | None = None,
    pinned_model: str | None = None,
) -> Decision:
    """The model for this question, by the assistant's policy: rules first, then the classifier.

    Rules send to the strong model: marginal retrieval (below min_retrieval_score), a question
    type in strong_types, more than max_cheap_words words, more than max_cheap_questions
    questions at once. Otherwise the classifier decides (when enabled) at strong_threshold;
    without it the cheap model answers. Raises RoutingConfigError for a bad policy.
    """
    policy = RoutingPolicy.from_dict(assistant.routing)
    features = question_features(question, history=history, retrieval_score=retrieval_score)
    record = features.as_json()
    if pinned_model:
        return Decision(
            pinned_model, FIXED, f"Pinned to {pinned_model} (a replay or an evaluation run).", record
        )
    if policy is None:
        model = assistant.chat_model
        return Decision(model, FIXED, f"No routing policy: the assistant's own model, {model}.", record)

    def strong(reason: str) -> Decision:
        return Decision(
            policy.strong_model,
            STRONG,
            f"{reason} The strong model, {policy.strong_model}.",
            record,
            policy.fallbacks_for(policy.strong_model),
            policy.timeout_seconds,
        )

    floor = policy.min_retrieval_score
    if retrieval_score is not None and floor is not None and retrieval_score < floor:
        return strong(
            f"Retrieval confidence {retrieval_score:.3f} is below {floor:g}: "
            "marginal context needs the stronger model."
        )
    if features.question_type in policy.strong_types:
        return strong(
            f"It is {_describe(features)}; {features.question_type.replace('_', '-')} questions go strong."
        )
    if features.words > policy.max_cheap_words:
        return strong(f"It is long: {features.words} words, over {policy.max_cheap_words}.")
    if features.questions > policy.max_cheap_questions:
        return strong(f"It asks {features.questions} questions at once.")
    detail = _describe(features)
    if retrieval_score is not None:
        detail += f", retrieval {retrieval_score:.3f}"
    if policy.use_classifier:
        p = strong_probability(features)
        record["strong_probability"] = round(p, 4)
        if p >= policy.strong_threshold:
            return strong(
                f"The classifier gives {p:.2f} (at or above {policy.strong_threshold:g}) for {detail}."
            )
        detail += f"; the classifier gives {p:.2f}, below {policy.strong_threshold:g}"
    return Decision(
        policy.cheap_model,
        CHEAP,
        f"Cheap: {detail}. The cheap model, {policy.cheap_model}.",
        record,
        policy.fallbacks_for(policy.cheap_model),
        policy.timeout_seconds,
    )
