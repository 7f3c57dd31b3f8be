"""`manage.py run_evals`: the summary it prints and the exit codes a CI job relies on."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from evals.models import Run, Suite
from gateway import provider
from tests.evals.conftest import NOT_FOUND, reply
from tests.fakes import FakeProvider

pytestmark = pytest.mark.django_db


def run_evals(*args: str) -> str:
    out = StringIO()
    call_command("run_evals", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_json_summary(suite: Suite, fake_provider: FakeProvider) -> None:
    fake_provider.replies += [reply(), NOT_FOUND]

    summary = json.loads(run_evals("--suite", "Policies", "--sync", "--json", "--fail-under", "1.0"))

    assert summary["status"] == "completed" and summary["pass_rate"] == 1.0
    assert summary["counts"] | {"passed": 2, "failed": 0, "errored": 0, "total": 2} == summary["counts"]
    assert summary["graders"]["facts"]["pass_rate"] == 1.0
    assert summary["regressions"] == [] and summary["errored"] == 0
    assert summary["cost_usd"] == 0.0 and summary["prompt_tokens"] > 0
    assert {"model", "prompt_version", "seed", "temperature", "baseline", "duration_s"} <= set(summary)
    assert Run.objects.get(pk=summary["run"]).trigger == Run.Trigger.CLI


def test_text_summary(suite: Suite, fake_provider: FakeProvider) -> None:
    fake_provider.replies += [reply(), NOT_FOUND]
    out = run_evals("--suite", "Policies", "--sync")
    assert "Pass rate 100% (2 passed, 0 failed, 0 errored of 2)" in out
    assert "  abstention" in out and "Cost $0.0000" in out


def test_below_the_threshold_exits_1(suite: Suite, fake_provider: FakeProvider) -> None:
    fake_provider.replies += [reply(), reply("The CEO is Ann [1].")]

    with pytest.raises(CommandError) as caught:
        run_evals("--suite", "Policies", "--sync", "--fail-under", "80")

    assert caught.value.returncode == 1 and "pass rate 50.0% is below 80.0%" in str(caught.value)


def test_errored_cases_count_against_the_threshold(suite: Suite, fake_provider: FakeProvider) -> None:
    fake_provider.replies += [
        provider.ProviderError("timeout", kind=provider.ErrorKind.TIMEOUT),
        NOT_FOUND,
    ]
    with pytest.raises(CommandError, match="pass rate 50.0% is below 60.0%"):
        run_evals("--suite", "Policies", "--sync", "--fail-under", "0.6", "--json")


def test_a_regression_exits_1_even_above_the_threshold(suite: Suite, fake_provider: FakeProvider) -> None:
    fake_provider.replies += [reply(), reply("The CEO is Ann [1].")]
    run_evals("--suite", "Policies", "--sync")  # due passes, unanswerable fails
    baseline = Run.objects.get()
    fake_provider.replies += [reply("Due every Friday [1]."), NOT_FOUND]  # swapped: 50 % again

    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command(
            "run_evals", "--suite", "Policies", "--sync", "--fail-under", "0.5",
            "--baseline", str(baseline.pk), "--json", stdout=out, stderr=StringIO(),
        )  # fmt: skip

    assert caught.value.returncode == 1 and f"1 case(s) regressed against run {baseline.pk}" in str(
        caught.value
    )
    summary = json.loads(out.getvalue())
    assert summary["pass_rate"] == 0.5 and summary["baseline"] == baseline.pk
    [regression] = summary["regressions"]
    assert regression["question"] == "When are expense reports due?" and "facts" in regression["failing"]


def test_no_regression_and_above_the_threshold_exits_0(suite: Suite, fake_provider: FakeProvider) -> None:
    fake_provider.replies += [reply(), reply("The CEO is Ann [1]."), reply(), NOT_FOUND]
    run_evals("--suite", "Policies", "--sync")
    out = run_evals("--suite", "Policies", "--sync", "--fail-under", "0.9")
    assert "Pass rate 100%" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--suite", "Nope"], "No suite named 'Nope'; the suites are: 'Policies'"),
        (["--suite", "Policies", "--baseline", "999"], "No run 999 of the suite 'Policies'"),
    ],
)
def test_bad_options(suite: Suite, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run_evals(*args)


def test_an_empty_suite_is_an_error(assistant: Any) -> None:
    Suite.objects.create(name="Empty")
    with pytest.raises(CommandError, match="has no cases"):
        run_evals("--suite", "Empty")


def test_waiting_for_workers_times_out_with_exit_2(
    suite: Suite, django_capture_on_commit_callbacks: Any
) -> None:
    # call_command runs in the test's transaction, so the tasks are never sent: nothing finishes.
    with pytest.raises(CommandError) as caught:
        run_evals("--suite", "Policies", "--timeout", "0.2", "--poll", "0.05")
    assert caught.value.returncode == 2 and "did not finish within 0 s" in str(caught.value)
