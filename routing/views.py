"""The routing page (staff): each assistant's policy, the route mix, quality and cost per route."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from common.access import StaffRequest, staff_required
from evals.models import Run
from routing import selectors
from routing.policy import EXAMPLE


@require_GET
@staff_required
def overview(request: StaffRequest) -> HttpResponse:
    run_id = request.GET.get("run", "")
    run = Run.objects.filter(pk=int(run_id)).first() if run_id.isdigit() else None
    try:
        days = min(max(int(request.GET.get("days", "30")), 1), 365)
    except ValueError:
        days = 30
    return render(
        request,
        "routing/overview.html",
        {
            "policies": selectors.policies(),
            "mix": selectors.route_mix(days=days),
            "days": days,
            "comparison": selectors.route_comparison(run_ids=[run.pk] if run else None),
            "run": run,
            "runs": Run.objects.filter(status=Run.Status.COMPLETED).select_related("suite")[:30],
            "jobs": selectors.finetune_jobs(),
            "example": EXAMPLE,
        },
    )
