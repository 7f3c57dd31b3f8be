from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from knowledge.models import Collection


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    collections = Collection.objects.readable_by(request.user)
    return render(request, "assistant/home.html", {"collections": collections})
