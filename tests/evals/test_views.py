"""The staff dashboard: suites, runs with live progress, comparisons, the chart, cancel and re-run."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from common.charts import line_chart
from evals import services
from evals.models import Result, Run, Suite
from tests.evals.conftest import NOT_FOUND, reply
from tests.fakes import FakeProvider

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def staff(client: Client, owner: Any) -> Client:
    client.force_login(owner)
    return client


def finished_run(suite: Suite, fake: FakeProvider, *replies: str) -> Run:
    fake.replies += list(replies)
    run = services.run_start(suite=suite, enqueue=False)
    for result_id in run.results.order_by("case_id").values_list("pk", flat=True):
        services.result_execute(result_id=result_id)
    run.refresh_from_db()
    return run


@pytest.mark.parametrize(
    ("name", "method"),
    [("evals:dashboard", "get"), ("evals:suite", "get"), ("evals:run", "get"), ("evals:run_cancel", "post")],
)
def test_staff_only(client: Client, member: Any, suite: Suite, name: str, method: str) -> None:
    run = services.run_start(suite=suite, enqueue=False)
    args = [] if name == "evals:dashboard" else [suite.pk if name == "evals:suite" else run.pk]
    url = reverse(name, args=args)

    anonymous = getattr(client, method)(url)
    client.force_login(member)
    not_staff = getattr(client, method)(url)

    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
    assert not_staff.status_code == 403
    assert Run.objects.get(pk=run.pk).status == Run.Status.PENDING  # the member's cancel did nothing


def test_dashboard_lists_suites_runs_and_calibrations(
    staff: Client, suite: Suite, fake_provider: FakeProvider
) -> None:
    run = finished_run(suite, fake_provider, reply(), NOT_FOUND)
    services.judge_calibration_record(judge_model="judge-1", grader="question_similarity", agreed=3, n=4)

    page = staff.get(reverse("evals:dashboard")).content.decode()

    assert "Policies" in page and f"#{run.pk}" in page and "100%" in page
    assert "judge-1" in page and "75%" in page


def test_suite_page_draws_the_pass_rate_chart(
    staff: Client, suite: Suite, fake_provider: FakeProvider
) -> None:
    finished_run(suite, fake_provider, reply(), NOT_FOUND)
    finished_run(suite, fake_provider, reply("Due on Fridays [1]."), NOT_FOUND)

    page = staff.get(reverse("evals:suite", args=[suite.pk])).content.decode()

    assert page.count("<svg") == 1 and page.count("<polyline") >= 6  # one line per grader, and overall
    assert "facts: 0% at #" in page and "(overall): 50% at #" in page
    assert "Pass rate per grader, Policies" in page and "facts" in page
    assert "When are expense reports due?" in page  # the cases table


def test_chart_without_runs_and_with_gaps() -> None:
    assert "No completed runs yet" in line_chart([], {}, title="t")
    svg = line_chart(["#1", "#2", "#3"], {"a<b": [1.0, None, 0.5]}, title="<t>")
    assert "<polyline" not in svg and svg.count("<circle") == 2  # a gap splits the line
    assert "a&lt;b" in svg and "&lt;t&gt;" in svg  # names are escaped


def test_start_a_run_from_the_suite_page(
    staff: Client, suite: Suite, fake_provider: FakeProvider, django_capture_on_commit_callbacks: Any
) -> None:
    fake_provider.replies += [reply(), NOT_FOUND]
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(reverse("evals:run_start", args=[suite.pk]), {"baseline": ""}, **HTMX)

    run = Run.objects.get()
    assert response.status_code == 200 and response["HX-Redirect"] == reverse("evals:run", args=[run.pk])
    assert run.created_by is not None and run.created_by.username == "owner"
    assert run.status == Run.Status.COMPLETED


def test_a_bad_baseline_re_renders_the_form(staff: Client, suite: Suite) -> None:
    response = staff.post(reverse("evals:run_start", args=[suite.pk]), {"baseline": "999"}, **HTMX)
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not Run.objects.exists()


def test_run_page_shows_deltas_regressions_and_details(
    staff: Client, suite: Suite, fake_provider: FakeProvider
) -> None:
    finished_run(suite, fake_provider, reply(), reply("The CEO is Ann [1]."))
    run = finished_run(suite, fake_provider, reply("Due every Friday [1]."), NOT_FOUND)

    page = staff.get(reverse("evals:run", args=[run.pk])).content.decode()

    assert "Regressions" in page and "regression</span>" in page
    assert "-100 pts" in page and "+50 pts" in page  # facts and abstention against the baseline
    assert "Due every Friday" in page and "No expected answer appears" in page  # answer and reason
    assert "the previous completed run" in page
    assert 'hx-get="' not in page  # finished: no polling


def test_progress_polls_while_running_and_reloads_once_done(staff: Client, suite: Suite) -> None:
    run = services.run_start(suite=suite, enqueue=False)
    url = reverse("evals:run_progress", args=[run.pk])

    page = staff.get(reverse("evals:run", args=[run.pk])).content.decode()
    fragment = staff.get(url + "?polling=1", **HTMX)

    assert f'hx-get="{url}?polling=1"' in page and 'hx-trigger="every 2s"' in page
    assert fragment.status_code == 200 and "0 of 2 done" in fragment.content.decode()
    assert "<html" not in fragment.content.decode()

    Run.objects.filter(pk=run.pk).update(status=Run.Status.COMPLETED)
    done = staff.get(url + "?polling=1", **HTMX)
    assert done["HX-Refresh"] == "true"
    assert staff.get(url)["Location"] == reverse("evals:run", args=[run.pk])  # not htmx: the page


def test_cancel_button(staff: Client, suite: Suite) -> None:
    run = services.run_start(suite=suite, enqueue=False)

    response = staff.post(reverse("evals:run_cancel", args=[run.pk]), **HTMX)

    assert response["HX-Refresh"] == "true"
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    assert set(run.results.values_list("status", flat=True)) == {Result.Status.CANCELLED}
    assert staff.get(reverse("evals:run_progress", args=[run.pk]), **HTMX).status_code == 200


def test_rerun_button(
    staff: Client, suite: Suite, fake_provider: FakeProvider, django_capture_on_commit_callbacks: Any
) -> None:
    run = finished_run(suite, fake_provider, reply("Due every Friday [1]."), NOT_FOUND)
    page = staff.get(reverse("evals:run", args=[run.pk])).content.decode()
    assert "Re-run failed and errored (1)" in page

    fake_provider.replies += [reply()]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = staff.post(reverse("evals:run_rerun", args=[run.pk]), **HTMX)

    assert response.status_code == 200 and "1 of 2 done" in response.content.decode()
    assert 'hx-trigger="every 2s"' in response.content.decode()
    for callback in callbacks:
        callback()
    run.refresh_from_db()
    assert run.status == Run.Status.COMPLETED and run.summary["pass_rate"] == 1.0

    plain = staff.post(reverse("evals:run_rerun", args=[run.pk]))
    assert plain.status_code == 302


def test_model_graded_scores_say_whether_the_judge_is_trusted(
    staff: Client, suite: Suite, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.JUDGE_MODEL = "judge-1"
    verdict = '{"reasoning": "It matches the reference.", "score": 1, "verdict": "pass"}'
    run = finished_run(suite, fake_provider, reply(), verdict, NOT_FOUND)

    page = staff.get(reverse("evals:run", args=[run.pk])).content.decode()

    assert "agreement not measured — not trusted" in page
    assert "Judge's reasoning: It matches the reference." in page
    services.judge_calibration_record(judge_model="judge-1", grader="judge_correctness", agreed=85, n=100)
    page = staff.get(reverse("evals:run", args=[run.pk])).content.decode()
    assert "agrees with people 85% of 100" in page


def test_starting_an_empty_suite_says_so(staff: Client, assistant: Any) -> None:
    empty = Suite.objects.create(name="Empty")
    response = staff.post(reverse("evals:run_start", args=[empty.pk]), {"baseline": ""}, **HTMX)
    assert response["HX-Redirect"] == reverse("evals:suite", args=[empty.pk])
    assert not Run.objects.exists()
    assert "no cases yet" in staff.get(reverse("evals:suite", args=[empty.pk])).content.decode()
