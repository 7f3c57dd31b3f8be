from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from ops.health import run_checks


@require_GET
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """200 when every component is ok, 503 otherwise; the body says which and why."""
    checks = run_checks()
    healthy = all(check.ok for check in checks.values())
    body = {"status": "ok" if healthy else "error", "components": {n: c.as_json() for n, c in checks.items()}}
    return JsonResponse(body, status=200 if healthy else 503)
