"""Runs: snapshot, one task per case, errored versus failed, cancel, re-run, baselines, the judge."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from assistant.models import Answer, Assistant
from evals import selectors, services, tasks
from evals.models import Case, Grade, Result, Run, Suite
from gateway import provider
from tests.evals.conftest import NOT_FOUND, QUESTION, reply
from tests.fakes import FakeProvider
from usage.models import ModelCall, ModelPrice, Purpose

pytestmark = pytest.mark.django_db

DOWN = provider.ProviderError("The chat model server cannot be reached.", kind=provider.ErrorKind.UNAVAILABLE)


def run_sync(suite: Suite, **kwargs: Any) -> Run:
    run = services.run_start(suite=suite, enqueue=False, **kwargs)
    for result_id in run.results.order_by("case_id").values_list("pk", flat=True):
        services.result_execute(result_id=result_id)
    run.refresh_from_db()
    return run


def statuses(run: Run) -> list[str]:
    return list(run.results.order_by("case_id").values_list("status", flat=True))


def test_a_run_snapshots_the_settings_and_grades_every_case(
    suite: Suite, assistant: Assistant, fake_provider: FakeProvider
) -> None:
    fake_provider.replies += [reply(), NOT_FOUND]

    run = run_sync(suite)

    assert run.status == Run.Status.COMPLETED and run.started_at and run.finished_at
    assert (run.model, run.prompt, run.seed, run.temperature) == (
        assistant.chat_model,
        assistant.prompt,
        assistant.seed,
        assistant.temperature,
    )
    assert run.run_as.username == services.RUNNER_USERNAME and not run.run_as.has_usable_password()
    assert statuses(run) == ["passed", "passed"]
    due = run.results.get(case__external_id="due")
    assert due.answer is not None and due.output == due.answer.text and due.answer.user == run.run_as
    graded = set(due.grades.values_list("grader", flat=True))
    assert graded == {
        *("format", "facts", "citations", "abstention", "refusal", "tone", "hallucination"),
        "shown_answer",
    }
    abstained = run.results.get(case__external_id="unanswerable")
    assert set(abstained.grades.values_list("grader", flat=True)) == {
        "format",
        "abstention",
        "tone",
        "shown_answer",
    }
    # Pass rates by whose text was shown: both answers here are the model's or none.
    assert summary_sources(run) == {"model": (1, 1), "none": (1, 1)}

    summary = run.summary
    assert summary["pass_rate"] == 1.0 and summary["counts"]["passed"] == 2 and summary["errored"] == 0
    assert summary["graders"]["abstention"] == {
        "kind": "deterministic",
        "total": 2,
        "passed": 2,
        "pass_rate": 1.0,
        "baseline_pass_rate": None,
        "delta": None,
    }
    assert summary["prompt_tokens"] > 0 and summary["cost_usd"] == 0.0  # local: no prices, tokens counted


def test_eval_answers_use_the_snapshot_not_later_edits(
    suite: Suite, assistant: Assistant, fake_provider: FakeProvider
) -> None:
    run = services.run_start(suite=suite, enqueue=False)
    assistant.temperature, assistant.min_similarity = 0.9, 0.99  # would abstain without asking
    assistant.save()
    fake_provider.replies += [reply(), NOT_FOUND]

    for result in run.results.all():
        services.result_execute(result_id=result.pk)

    assert {a.temperature for a in Answer.objects.all()} == {0.0}
    assert len(fake_provider.calls) == 2  # the snapshot's min_similarity (0) let both reach the model


def summary_sources(run: Run) -> dict[str, tuple[int, int]]:
    return {k: (v["passed"], v["total"]) for k, v in run.summary["by_answer_source"].items()}


def test_a_wrong_answer_fails_with_the_graders_reasons(suite: Suite, fake_provider: FakeProvider) -> None:
    fake_provider.replies += [
        reply("Expense reports are due every Friday [1]."),
        reply("The CEO is Ann [1]."),
    ]

    run = run_sync(suite)

    assert statuses(run) == ["failed", "failed"]
    due = run.results.get(case__external_id="due")
    facts = due.grades.get(grader="facts")
    assert not facts.passed and "No expected answer appears" in facts.reason
    assert run.results.get(case__external_id="unanswerable").grades.get(grader="abstention").passed is False
    assert run.summary["pass_rate"] == 0.0


def test_a_model_failure_is_errored_not_failed_and_can_be_re_run(
    suite: Suite, fake_provider: FakeProvider
) -> None:
    fake_provider.replies += [DOWN, reply("The CEO is Ann [1].")]

    run = run_sync(suite)

    errored = run.results.get(case__external_id="due")
    assert errored.status == Result.Status.ERRORED and errored.passed is None
    assert "cannot be reached" in errored.error and "(unavailable)" in errored.error
    assert not errored.grades.exists()
    assert run.results.get(case__external_id="unanswerable").status == Result.Status.FAILED
    assert run.status == Run.Status.COMPLETED
    assert run.summary["errored"] == 1 and run.summary["pass_rate"] == 0.0

    fake_provider.replies += [reply(), NOT_FOUND]
    assert services.run_rerun_failed(run=run, enqueue=False) == 2
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING and run.summary == {}
    for result_id in run.results.values_list("pk", flat=True):
        services.result_execute(result_id=result_id)

    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED and statuses(run) == ["passed", "passed"]
    assert set(run.results.values_list("attempts", flat=True)) == {2}
    assert run.summary["pass_rate"] == 1.0


def test_an_unexpected_error_is_recorded_not_left_running(
    suite: Suite, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assistant import pipeline

    def broken(**kwargs: Any) -> Answer:
        raise KeyError("oops")

    monkeypatch.setattr(pipeline, "run_to_answer", broken)
    run = run_sync(suite)
    assert statuses(run) == ["errored", "errored"]
    assert run.results.first().error == "KeyError: 'oops'"  # type: ignore[union-attr]


def test_tasks_go_through_celery_after_the_commit(
    suite: Suite, fake_provider: FakeProvider, django_capture_on_commit_callbacks: Any
) -> None:
    fake_provider.replies += [reply(), NOT_FOUND]

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run = services.run_start(suite=suite)

    assert len(callbacks) == 1  # one callback queueing one task per case (eager in unit tests)
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED and statuses(run) == ["passed", "passed"]


def test_a_result_is_claimed_once(suite: Suite, fake_provider: FakeProvider) -> None:
    fake_provider.replies += [reply()]
    run = services.run_start(suite=suite, enqueue=False)
    result = run.results.get(case__external_id="due")

    assert tasks.run_case(result.pk) == "passed"
    assert tasks.run_case(result.pk) == "skipped"  # a second delivery does nothing
    assert len(fake_provider.calls) == 1


def test_cancel_stops_waiting_cases(suite: Suite, fake_provider: FakeProvider) -> None:
    fake_provider.replies += [reply()]
    run = services.run_start(suite=suite, enqueue=False)
    first, second = run.results.order_by("case_id")
    services.result_execute(result_id=first.pk)

    assert services.run_cancel(run=run) == 1
    assert services.result_execute(result_id=second.pk) == "skipped"

    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED and statuses(run) == ["passed", "cancelled"]
    assert len(fake_provider.calls) == 1
    assert services.run_rerun_failed(run=run, enqueue=False) == 0  # nothing failed


def test_an_empty_suite_completes_at_once(assistant: Assistant) -> None:
    run = services.run_start(suite=Suite.objects.create(name="Empty"), enqueue=False)
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED and run.summary["pass_rate"] is None


def test_regressions_against_the_previous_run_and_a_chosen_baseline(
    suite: Suite, fake_provider: FakeProvider
) -> None:
    fake_provider.replies += [reply(), reply("The CEO is Ann [1].")]
    first = run_sync(suite)
    fake_provider.replies += [reply("Expense reports are due every Friday [1]."), NOT_FOUND]
    second = run_sync(suite)

    comparison = selectors.run_compare(second)

    assert comparison.baseline == first
    [regression] = comparison.regressions
    assert regression.question == QUESTION and (regression.before, regression.after) == ("passed", "failed")
    assert "facts" in regression.failing
    [fixed] = comparison.fixed
    assert fixed.after == "passed"
    assert comparison.graders["facts"]["delta"] == -1.0
    assert comparison.graders["abstention"]["pass_rate"] == 1.0
    assert comparison.graders["abstention"]["baseline_pass_rate"] == 0.5
    assert comparison.graders["abstention"]["delta"] == 0.5
    assert second.summary["regressions"][0]["case"] == regression.case_id

    fake_provider.replies += [reply(), NOT_FOUND]
    third = run_sync(suite, baseline=second)
    assert selectors.run_compare(third).baseline == second
    assert not selectors.run_compare(third).regressions
    assert selectors.run_baseline(first) is None


def test_nightly_runs_start_flagged_suites_once(suite: Suite, fake_provider: FakeProvider) -> None:
    Suite.objects.create(name="Not nightly")
    suite.nightly = True
    suite.save()
    running = Suite.objects.create(name="Still going", nightly=True)
    Case.objects.create(suite=running, question="q")
    services.run_start(suite=running, enqueue=False)

    started = tasks.nightly_runs()

    assert [Run.objects.get(pk=pk).suite for pk in started] == [suite]
    assert Run.objects.get(pk=started[0]).trigger == Run.Trigger.NIGHTLY


def _judge(verdict: str) -> str:
    return json.dumps(
        {"reasoning": f"Judged {verdict}.", "score": 1 if verdict == "pass" else 0, "verdict": verdict}
    )


@override_settings(JUDGE_MODEL="judge-1")
def test_an_uncalibrated_judge_is_shown_but_does_not_decide(
    suite: Suite, fake_provider: FakeProvider
) -> None:
    fake_provider.replies += [reply(), _judge("fail"), NOT_FOUND]

    run = run_sync(suite)

    assert run.judge_model == "judge-1"
    due = run.results.get(case__external_id="due")
    grade = due.grades.get(grader="judge_correctness")
    assert grade.kind == Grade.Kind.MODEL and not grade.passed and not grade.counted
    assert grade.judge_model == "judge-1" and grade.judge_reasoning == "Judged fail."
    assert due.status == Result.Status.PASSED  # the deterministic graders decide
    entry = run.summary["graders"]["judge_correctness"]
    assert entry["agreement"] is None and entry["trusted"] is False


@override_settings(JUDGE_MODEL="judge-1")
def test_a_calibrated_judge_counts(suite: Suite, fake_provider: FakeProvider) -> None:
    services.judge_calibration_record(judge_model="judge-1", grader="judge_correctness", agreed=90, n=100)
    fake_provider.replies += [reply(), _judge("fail"), NOT_FOUND]

    run = run_sync(suite)

    due = run.results.get(case__external_id="due")
    assert due.grades.get(grader="judge_correctness").counted
    assert due.status == Result.Status.FAILED
    entry = run.summary["graders"]["judge_correctness"]
    assert entry["agreement"] == 0.9 and entry["agreement_n"] == 100 and entry["trusted"] is True


@override_settings(JUDGE_MODEL="judge-1")
def test_the_judges_calls_count_in_the_run_cost_not_in_the_answer(
    suite: Suite, fake_provider: FakeProvider
) -> None:
    for model, price in (("judge-1", "1"), (settings.CHAT_MODEL, "0"), (settings.EMBEDDING_MODEL, "0")):
        ModelPrice.objects.update_or_create(
            model=model, defaults={"input_per_million": Decimal(price), "output_per_million": Decimal(price)}
        )
    fake_provider.replies += [reply(), _judge("pass"), NOT_FOUND]

    run = run_sync(suite)

    due = run.results.get(case__external_id="due")
    judged = ModelCall.objects.get(purpose=Purpose.JUDGE)
    assert judged.answer_id == due.answer_id and judged.model == "judge-1" and judged.user == run.run_as
    assert judged.cost is not None and judged.cost > 0
    assert due.answer is not None and due.answer.cost_usd == 0  # the local answer model is free
    cost = run.summary
    assert cost["judge_calls"] == 1 and cost["judge_prompt_tokens"] == judged.prompt_tokens
    assert cost["judge_cost_usd"] == float(judged.cost) and cost["cost_usd"] == float(judged.cost)
    assert cost["answers_cost_usd"] == 0.0


def test_without_a_judge_the_run_cost_has_no_judge_calls(suite: Suite, fake_provider: FakeProvider) -> None:
    fake_provider.replies += [reply(), NOT_FOUND]

    run = run_sync(suite)

    assert not ModelCall.objects.filter(purpose=Purpose.JUDGE).exists()
    assert run.summary["judge_calls"] == 0 and run.summary["judge_cost_usd"] == 0.0
    assert run.summary["prompt_tokens"] > 0


@override_settings(JUDGE_MODEL="judge-1", JUDGE_MIN_AGREEMENT=0.95)
def test_a_judge_below_the_bar_is_not_trusted(suite: Suite) -> None:
    services.judge_calibration_record(judge_model="judge-1", grader="judge_correctness", agreed=90, n=100)
    assert not selectors.judge_trusted("judge-1", "judge_correctness")
    assert not selectors.judge_trusted("judge-2", "judge_correctness")
    with pytest.raises(ValueError):
        services.judge_calibration_record(judge_model="judge-1", grader="x", agreed=0, n=0)


@override_settings(JUDGE_MODEL="judge-1")
def test_a_judge_failure_errors_the_case(suite: Suite, fake_provider: FakeProvider) -> None:
    fake_provider.replies += [reply(), DOWN, NOT_FOUND]
    run = run_sync(suite)
    due = run.results.get(case__external_id="due")
    assert due.status == Result.Status.ERRORED and due.answer is not None  # the answer is kept


def test_the_runner_reads_public_and_suite_collections_only(suite: Suite, member: Any) -> None:
    from knowledge.selectors import readable_collection_ids
    from tests import factories

    private = factories.collection(name="Board", readers=[member])
    services.seed_default_suite()
    readable = set(readable_collection_ids(services.runner_user()))
    own = Suite.objects.get(name="Demo knowledge").collection_id
    assert own in readable and private.pk not in readable


def test_re_run_picks_up_a_result_a_dead_worker_left_running(
    suite: Suite, fake_provider: FakeProvider
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    run = services.run_start(suite=suite, enqueue=False)
    stuck = run.results.get(case__external_id="due")
    Result.objects.filter(pk=stuck.pk).update(
        status=Result.Status.RUNNING, started_at=timezone.now() - services.STALE_AFTER - timedelta(seconds=1)
    )
    fresh = run.results.get(case__external_id="unanswerable")
    Result.objects.filter(pk=fresh.pk).update(status=Result.Status.RUNNING, started_at=timezone.now())

    assert services.run_rerun_failed(run=run, enqueue=False) == 1
    assert Result.objects.get(pk=stuck.pk).status == Result.Status.PENDING
    assert Result.objects.get(pk=fresh.pk).status == Result.Status.RUNNING  # still being worked on


def test_a_run_keeps_the_judge_it_started_with(
    suite: Suite, fake_provider: FakeProvider, settings: Any
) -> None:
    run = services.run_start(suite=suite, enqueue=False)  # JUDGE_MODEL empty: no judge
    settings.JUDGE_MODEL = "judge-1"
    fake_provider.replies += [reply(), NOT_FOUND]
    for result_id in run.results.values_list("pk", flat=True):
        services.result_execute(result_id=result_id)
    assert not Grade.objects.filter(kind=Grade.Kind.MODEL).exists()
    assert len(fake_provider.calls) == 2  # no judge calls
