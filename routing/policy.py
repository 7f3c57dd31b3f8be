"""Which model answers a question: a routing policy per assistant, and the decision with its reason.

`route_decide` is step 11 of an answer (assistant/pipeline/prompting.py, `route`): after retrieval
and the weak-retrieval abstention, before the tool rounds, it picks the model from the question,
retrieval's best vector match and the history, and says why (`Decision`: route, model, reason,
features). A replay or eval run whose settings name another model than the assistant's passes
it as `pinned_model`, and the decision is then route "fixed". The pipeline makes every model
call of the turn on the decided model through routing.fallback (`stream_with_fallback` for the
streamed answer, `chat_with_fallback` for tool rounds and the repair), which moves on to the
policy's fallback models on a timeout or outage and returns the decision that answered; the
Answer records it (`Answer.route`, `Decision.as_json()`), and its `model` is the one that
answered. Abstentions before the model call record none (route stays {}).

A policy is `Assistant.routing`, a JSON object; an empty one means "always the assistant's own
model". `RoutingPolicy.from_dict` validates it and raises RoutingConfigError listing every
problem in words an admin can act on; `routing_config_errors(value)` returns them as a list
(for an admin form's clean_routing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from assistant.models import Assistant
from routing.features import QUESTION_TYPES, VECTOR_NAMES, Features, question_features
from routing.training import CLASSIFIER_PATH, sigmoid

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


@dataclass(frozen=True)
class RoutingPolicy:
    cheap_model: str
    strong_model: str
    fallback_models: tuple[str, ...] = ()
    # The classifier's probability of "needs the strong model" at or above which it is used.
    strong_threshold: float = 0.5
    # Below this best vector similarity the context is marginal: the strong model copes better.
    # multilingual-e5-small scored relevant passages 0.87-0.92 (see Assistant.min_similarity).
    min_retrieval_score: float | None = 0.87
    max_cheap_words: int = 40
    max_cheap_questions: int = 1
    strong_types: tuple[str, ...] = ("comparison", "multi_step")
    use_classifier: bool = True
    timeout_seconds: float | None = None

    @classmethod
    def from_dict(cls, value: Any) -> RoutingPolicy | None:
        """The policy in `value` (Assistant.routing), None when it is empty, or RoutingConfigError."""
        if value in (None, {}):
            return None
        if not isinstance(value, dict):
            raise RoutingConfigError([f"must be a JSON object like {json.dumps(EXAMPLE)}, not {value!r}."])
        errors: list[str] = []
        known = set(cls.__dataclass_fields__)
        errors += [
            f"unknown setting {key!r} (known: {', '.join(sorted(known))})."
            for key in value
            if key not in known
        ]

        def text(key: str, required: bool) -> str:
            raw = value.get(key, "")
            if not isinstance(raw, str) or (required and not raw.strip()):
                errors.append(f"{key} must be a model name (text){' and is required' if required else ''}.")
                return ""
            return raw.strip()

        def number(key: str, default: float | None, low: float, high: float, *, integer: bool = False) -> Any:
            raw = value.get(key, default)
            if raw is None and default is None:
                return None
            kind = int if integer else (int, float)
            if isinstance(raw, bool) or not isinstance(raw, kind) or not low <= raw <= high:
                what = "a whole number" if integer else "a number"
                errors.append(f"{key} must be {what} from {low:g} to {high:g}, not {raw!r}.")
                return default
            return raw

        def names(
            key: str, default: tuple[str, ...], allowed: tuple[str, ...] | None = None
        ) -> tuple[str, ...]:
            raw = value.get(key, list(default))
            if not isinstance(raw, list) or not all(isinstance(v, str) and v.strip() for v in raw):
                errors.append(f"{key} must be a list of names, not {raw!r}.")
                return default
            if allowed is not None:
                wrong = [v for v in raw if v not in allowed]
                if wrong:
                    errors.append(f"{key}: unknown question type(s) {wrong}; use {', '.join(allowed)}.")
                    return default
            return tuple(dict.fromkeys(v.strip() for v in raw))

        use_classifier = value.get("use_classifier", True)
        if not isinstance(use_classifier, bool):
            errors.append(f"use_classifier must be true or false, not {use_classifier!r}.")
            use_classifier = True
        policy = cls(
            cheap_model=text("cheap_model", True),
            strong_model=text("strong_model", True),
            fallback_models=names("fallback_models", ()),
            strong_threshold=number("strong_threshold", 0.5, 0.0, 1.0),
            min_retrieval_score=number("min_retrieval_score", 0.87, -1.0, 1.0),
            max_cheap_words=number("max_cheap_words", 40, 1, 100_000, integer=True),
            max_cheap_questions=number("max_cheap_questions", 1, 1, 100, integer=True),
            strong_types=names("strong_types", ("comparison", "multi_step"), QUESTION_TYPES),
            use_classifier=use_classifier,
            timeout_seconds=number("timeout_seconds", None, 1.0, 600.0),
        )
        if errors:
            raise RoutingConfigError(errors)
        return policy

    def as_json(self) -> dict[str, Any]:
        return {
            "cheap_model": self.cheap_model,
            "strong_model": self.strong_model,
            "fallback_models": list(self.fallback_models),
            "strong_threshold": self.strong_threshold,
            "min_retrieval_score": self.min_retrieval_score,
            "max_cheap_words": self.max_cheap_words,
            "max_cheap_questions": self.max_cheap_questions,
            "strong_types": list(self.strong_types),
            "use_classifier": self.use_classifier,
            "timeout_seconds": self.timeout_seconds,
        }

    def fallbacks_for(self, model: str) -> tuple[str, ...]:
        """The models to try, in order, when `model` fails: the configured list, else the other tier."""
        chain = self.fallback_models or (
            (self.strong_model,) if model == self.cheap_model else (self.cheap_model,)
        )
        return tuple(m for m in dict.fromkeys(chain) if m != model)


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
