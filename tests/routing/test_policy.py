"""Routing policy: validation, the rules, the classifier both ways, and the recorded reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.models import Assistant
from routing import training
from routing.features import question_features, question_type
from routing.policy import EXAMPLE, RoutingConfigError, RoutingPolicy, route_decide, routing_config_errors

pytestmark = pytest.mark.django_db

POLICY = {"cheap_model": "small", "strong_model": "large"}
DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def routed(assistant: Assistant, **policy: object) -> Assistant:
    assistant.routing = {**POLICY, **policy}
    assistant.save(update_fields=["routing"])
    return assistant


def test_an_empty_policy_means_the_assistants_own_model(assistant: Assistant) -> None:
    decision = route_decide(assistant=assistant, question="Why?", retrieval_score=0.1, history=[])

    assert (decision.route, decision.model) == ("fixed", assistant.chat_model)
    assert "No routing policy" in decision.reason and decision.fallbacks == ()
    assert decision.as_json()["features"]["question_type"] == "why"


def test_a_pinned_model_is_kept_whatever_the_policy(assistant: Assistant) -> None:
    routed(assistant)

    decision = route_decide(assistant=assistant, question="Why?", retrieval_score=0.5, pinned_model="ft:x")

    assert (decision.route, decision.model) == ("fixed", "ft:x") and "Pinned" in decision.reason


def test_a_short_lookup_with_good_retrieval_goes_cheap_with_its_reason(assistant: Assistant) -> None:
    routed(assistant)

    decision = route_decide(assistant=assistant, question="Who is the head of finance?", retrieval_score=0.91)

    assert (decision.route, decision.model, decision.fallbacks) == ("cheap", "small", ("large",))
    assert "lookup question of 6 words" in decision.reason and "below 0.5" in decision.reason
    record = decision.as_json()
    assert record["route"] == "cheap" and record["model"] == "small" and record["reason"] == decision.reason
    assert record["features"]["retrieval_score"] == 0.91 and record["features"]["strong_probability"] < 0.5


@pytest.mark.parametrize(
    ("question", "score", "policy", "why"),
    [
        ("Who is the head of finance?", 0.80, {}, "Retrieval confidence 0.800 is below 0.87"),
        ("What is the difference between GPL and MPL?", 0.95, {}, "comparison questions go strong"),
        ("Who approves " + "very " * 45 + "large orders?", 0.95, {}, "over 40"),
        ("Who approves orders? And when are they paid?", 0.95, {}, "asks 3 questions at once"),
        ("Why are expense reports due on the 5th?", 0.95, {"strong_types": []}, "The classifier gives"),
        ("Who is the head of finance?", 0.95, {"strong_threshold": 0.0}, "The classifier gives"),
    ],
)
def test_rules_and_the_classifier_send_to_the_strong_model(
    assistant: Assistant, question: str, score: float, policy: dict[str, object], why: str
) -> None:
    routed(assistant, **policy)

    decision = route_decide(assistant=assistant, question=question, retrieval_score=score)

    assert (decision.route, decision.model, decision.fallbacks) == ("strong", "large", ("small",))
    assert why in decision.reason and decision.reason.endswith("The strong model, large.")


def test_without_the_classifier_what_no_rule_catches_goes_cheap(assistant: Assistant) -> None:
    routed(assistant, strong_types=[], use_classifier=False)

    decision = route_decide(
        assistant=assistant, question="Why are reports due on the 5th?", retrieval_score=0.95
    )

    assert decision.route == "cheap" and "classifier" not in decision.reason


def test_the_classifier_ranks_why_above_lookup() -> None:
    from routing.policy import strong_probability

    why = strong_probability(question_features("Why does the virus spread faster indoors?"))
    lookup = strong_probability(question_features("When was the virus first identified?"))

    assert why > 0.5 > lookup


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("When are expense reports due?", "lookup"),
        ("What is a NOTICE file?", "definition"),
        ("Compare the Apache and MIT licences", "comparison"),
        ("How do I submit a claim?", "how"),
        ("How many days of leave do I get?", "lookup"),
        ("Why did the build fail?", "why"),
        ("Walk me through the onboarding steps", "multi_step"),
    ],
)
def test_question_types(question: str, kind: str) -> None:
    assert question_type(question) == kind


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("cheap", "must be a JSON object"),
        ({"cheap_model": "small"}, "strong_model must be a model name (text) and is required."),
        ({**POLICY, "strong_threshold": 2}, "strong_threshold must be a number from 0 to 1, not 2."),
        ({**POLICY, "strong_types": ["hard"]}, "unknown question type(s) ['hard']"),
        ({**POLICY, "fallback_models": "gpt"}, "fallback_models must be a list of names"),
        ({**POLICY, "max_cheap_words": 2.5}, "max_cheap_words must be a whole number"),
        ({**POLICY, "use_classifier": "yes"}, "use_classifier must be true or false"),
        ({**POLICY, "cheap": "x"}, "unknown setting 'cheap'"),
    ],
)
def test_a_bad_policy_says_what_is_wrong(value: object, message: str) -> None:
    errors = routing_config_errors(value)

    assert any(message in error for error in errors), errors
    with pytest.raises(RoutingConfigError) as raised:
        RoutingPolicy.from_dict(value)
    assert raised.value.errors == errors


def test_a_good_policy_has_no_errors_and_a_bad_one_stops_routing(assistant: Assistant) -> None:
    assert (
        routing_config_errors({}) == [] and routing_config_errors({**POLICY, "fallback_models": ["x"]}) == []
    )
    routed(assistant, strong_threshold="high")

    with pytest.raises(RoutingConfigError, match="strong_threshold"):
        route_decide(assistant=assistant, question="Who?", retrieval_score=0.9)


def test_a_policy_stores_only_its_overrides_and_reads_full_stored_objects() -> None:
    full = {**EXAMPLE, "min_retrieval_score": 0.87, "max_cheap_words": 40}
    policy = RoutingPolicy.from_dict(full)

    assert policy is not None and RoutingPolicy.from_dict(policy.as_json()) == policy
    assert policy.as_dict() == {
        "cheap_model": "gpt-4o-mini",
        "strong_model": "gpt-4o",
        "fallback_models": ["gpt-4o-mini"],
        "timeout_seconds": 30.0,
    }


def test_configured_fallbacks_replace_the_other_tier() -> None:
    policy = RoutingPolicy.from_dict({**POLICY, "fallback_models": ["large", "backup", "backup"]})

    assert policy is not None
    assert policy.fallbacks_for("small") == ("large", "backup") and policy.fallbacks_for("large") == (
        "backup",
    )


@pytest.mark.skipif(not (DATASETS / "covid-qa").is_dir(), reason="the shared datasets are not here")
def test_training_is_reproducible_and_beats_the_majority_baseline() -> None:
    model = training.train(DATASETS)
    shipped = json.loads(training.CLASSIFIER_PATH.read_text(encoding="utf-8"))

    assert model["weights"] == shipped["weights"] and model["bias"] == shipped["bias"]
    assert model["metrics"]["test_accuracy"] > model["metrics"]["test_majority_baseline"]
    assert model["metrics"]["test_auc"] > 0.55
