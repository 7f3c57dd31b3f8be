"""Health for load balancers, the operations dashboard for staff, and Prometheus metrics."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from common.access import StaffRequest, staff_required
from ops import charts, metrics, selectors
from ops.forms import RangeForm
from ops.health import run_checks
from usage import selectors as usage


@require_GET
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """200 when every component is ok, 503 otherwise.

    Anyone (a load balancer) gets the status alone. Which component failed and why, and the
    versions and model names the checks report, go only to staff and to METRICS_TOKEN: they tell
    an attacker what is running.
    """
    checks = run_checks()
    healthy = all(check.ok for check in checks.values())
    body: dict[str, Any] = {"status": "ok" if healthy else "error"}
    if _may_read_details(request):
        body["components"] = {n: c.as_json() for n, c in checks.items()}
    return JsonResponse(body, status=200 if healthy else 503)


def _may_read_details(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and secrets.compare_digest(given.strip(), token):
        return True
    return bool(request.user.is_authenticated and request.user.is_staff)


def _dashboard_context(period: selectors.DateRange) -> dict[str, Any]:
    days = period.days
    spend = selectors.usage_figures(period)
    cache = selectors.cache_figures(period)
    routing = selectors.routing_mix(period)
    answers = selectors.answers_per_day(period)
    flags = selectors.flags_per_day(period)
    evals = selectors.eval_pass_rate_per_day(period)
    return {
        "period": period,
        "answers_total": sum(answers["answers"].values()),
        "flags_total": sum(sum(by_day.values()) for by_day in flags.values()),
        "spend": spend,
        "cache": cache,
        "routing": routing,
        "latency": selectors.latency_table(period),
        "budgets": usage.budgets_overview(),
        "unpriced": selectors.models_without_price(),
        "charts": {
            "answers": charts.line_chart(days, answers, title="Answers per day"),
            "shown": charts.line_chart(
                days, selectors.answer_sources_per_day(period), title="Answers per day by what was shown"
            ),
            "latency": charts.line_chart(
                days,
                selectors.latency_per_day(period),
                title="Answer latency per day, total (ms)",
                fill_zero=False,
            ),
            "cost_model": charts.line_chart(
                days, spend["by_model"], title="Cost per day by model (USD)", fmt=charts.dollars
            ),
            "cost_purpose": charts.line_chart(
                days, spend["by_purpose"], title="Cost per day by purpose (USD)", fmt=charts.dollars
            ),
            "cache": charts.rate_chart(
                days,
                selectors.cache_rate_per_day(period),
                title="Cache hit rate per day",
                empty="No answers in this range.",
            ),
            "routing": charts.line_chart(days, routing["per_day"], title="Answers per day by model"),
            "flags": charts.line_chart(days, flags, title="Flags per day by source", empty="No flags."),
            "evals": charts.rate_chart(
                days, evals, title="Eval pass rate per suite", empty="No eval run finished in this range."
            ),
        },
    }


@require_GET
@staff_required
def dashboard(request: StaffRequest) -> HttpResponse:
    """Requests, latency, cost, cache, routing, flags and evals over a date range (staff)."""
    form = RangeForm(request.GET or None)
    if form.is_bound and form.is_valid():
        period = selectors.DateRange(form.cleaned_data["start"], form.cleaned_data["end"])
    else:
        period = selectors.DateRange.last(14)
        if not form.is_bound:
            form = RangeForm(initial={"start": period.start, "end": period.end})
    today = timezone.localdate()
    presets = [(n, today - timedelta(days=n - 1), today) for n in (7, 30, 90)]
    context = {"form": form, "presets": presets, **_dashboard_context(period)}
    return render(request, "ops/dashboard.html", context)


def _metrics_allowed(request: HttpRequest) -> HttpResponse | None:
    """None when the caller may read the metrics; otherwise the refusal.

    With METRICS_TOKEN set, `Authorization: Bearer <token>` is accepted (Prometheus); signed-in
    staff may always read them.
    """
    if _may_read_details(request):
        return None
    token = settings.METRICS_TOKEN
    hint = (
        "Send `Authorization: Bearer <METRICS_TOKEN>`."
        if token
        else "Set METRICS_TOKEN and scrape with `Authorization: Bearer <token>`, or sign in as staff."
    )
    status = 403 if request.user.is_authenticated else 401
    refused = HttpResponse(f"{hint}\n", status=status, content_type="text/plain; charset=utf-8")
    if status == 401:
        refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return refused


@require_GET
@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format: answers, model calls, tokens, cost, latency, cache hits, flags."""
    refused = _metrics_allowed(request)
    if refused is not None:
        return refused
    return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
