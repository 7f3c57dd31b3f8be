"""The evals dashboard (staff only): suites, runs with live progress, comparisons, pass-rate history."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseClientRefresh

from common import charts
from common.access import StaffRequest, staff_required
from evals import selectors, services
from evals.forms import RunStartForm
from evals.models import JudgeCalibration, Run, Suite

RUN_PAGE = "evals/run.html"


def _run_or_404(pk: int) -> Run:
    return get_object_or_404(Run.objects.select_related("suite", "prompt", "assistant", "baseline"), pk=pk)


@require_GET
@staff_required
def dashboard(request: StaffRequest) -> HttpResponse:
    return render(
        request,
        "evals/dashboard.html",
        {
            "suites": selectors.suites_overview(),
            "runs": selectors.runs_overview(limit=20),
            "calibrations": JudgeCalibration.objects.all()[:10],
        },
    )


def _suite_context(request: StaffRequest, suite: Suite, form: RunStartForm | None = None) -> dict[str, Any]:
    history = selectors.pass_rate_history(suite)
    names = sorted({name for _, rates in history for name in rates})
    series = {name: [rates.get(name) for _, rates in history] for name in names}
    series["(overall)"] = [run.summary.get("pass_rate") for run, _ in history]
    chart = charts.line_chart(
        [f"#{run.pk}" for run, _ in history], series, title=f"Pass rate per grader, {suite.name}"
    )
    return {
        "suite": suite,
        "cases": suite.cases.order_by("pk"),
        "runs": selectors.runs_overview(suite),
        "chart": chart,
        "form": form or RunStartForm(suite=suite),
    }


@require_GET
@staff_required
def suite_detail(request: StaffRequest, pk: int) -> HttpResponse:
    suite = get_object_or_404(Suite, pk=pk)
    return render(request, "evals/suite.html", _suite_context(request, suite))


@require_POST
@staff_required
def run_start(request: StaffRequest, pk: int) -> HttpResponse:
    suite = get_object_or_404(Suite, pk=pk)
    form = RunStartForm(request.POST, suite=suite)
    if not form.is_valid():
        template = "evals/suite.html#start" if request.htmx else "evals/suite.html"
        return render(request, template, _suite_context(request, suite, form))
    if not suite.cases.exists():
        messages.error(request, "This suite has no cases yet: import some first.")
        back = reverse("evals:suite", args=[suite.pk])
        return HttpResponseClientRedirect(back) if request.htmx else redirect(back)
    run = services.run_start(suite=suite, user=request.user, baseline=form.cleaned_data["baseline"])
    url = reverse("evals:run", args=[run.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _run_context(run: Run) -> dict[str, Any]:
    comparison = selectors.run_compare(run)
    return {
        "run": run,
        "progress": selectors.run_progress(run),
        "comparison": comparison,
        "cost": selectors.run_cost(run),
        "by_source": selectors.rates_by_answer_source(run),
        "duration": selectors.run_duration(run),
        "results": selectors.results_of(run),
        "regressed": {c.result_id for c in comparison.regressions},
    }


@require_GET
@staff_required
def run_detail(request: StaffRequest, pk: int) -> HttpResponse:
    return render(request, RUN_PAGE, _run_context(_run_or_404(pk)))


@require_GET
@staff_required
def run_progress(request: StaffRequest, pk: int) -> HttpResponse:
    """The progress fragment; it polls itself while the run is going, then reloads the page once."""
    run = _run_or_404(pk)
    if request.htmx and not run.is_active and request.GET.get("polling"):
        return HttpResponseClientRefresh()  # the figures below are final now
    if not request.htmx:
        return redirect("evals:run", pk=run.pk)
    return render(request, f"{RUN_PAGE}#progress", {"run": run, "progress": selectors.run_progress(run)})


@require_POST
@staff_required
def run_cancel(request: StaffRequest, pk: int) -> HttpResponse:
    run = _run_or_404(pk)
    cancelled = services.run_cancel(run=run)
    if request.htmx:
        return HttpResponseClientRefresh()  # every row on the page changes
    messages.success(
        request, f"Cancelled; {cancelled} waiting case{'s' if cancelled != 1 else ''} will not run."
    )
    return redirect("evals:run", pk=run.pk)


@require_POST
@staff_required
def run_rerun(request: StaffRequest, pk: int) -> HttpResponse:
    run = _run_or_404(pk)
    count = services.run_rerun_failed(run=run)
    run.refresh_from_db()
    if request.htmx:
        return render(request, f"{RUN_PAGE}#progress", {"run": run, "progress": selectors.run_progress(run)})
    messages.success(request, f"Re-running {count} failed or errored case{'s' if count != 1 else ''}.")
    return redirect("evals:run", pk=run.pk)
