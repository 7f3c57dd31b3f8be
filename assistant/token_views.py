"""The API tokens page: each person creates and revokes their own tokens for the OpenAI-compatible API."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from assistant import serializers, services
from assistant.models import ApiToken, Assistant
from common.http import AuthenticatedRequest


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True)


def _token_or_404(user: User, pk: int) -> ApiToken:
    """One of the user's own tokens; anyone else's is a 404."""
    return get_object_or_404(ApiToken, pk=pk, user=user)


def _render(
    request: AuthenticatedRequest,
    form: TokenForm,
    *,
    created: ApiToken | None = None,
    raw_token: str = "",
) -> HttpResponse:
    context: dict[str, Any] = {
        "form": form,
        "tokens": ApiToken.objects.filter(user=request.user),
        "created": created,
        "raw_token": raw_token,
    }
    if request.htmx:
        return render(request, "assistant/tokens.html#panel", context)
    base_url = request.build_absolute_uri(reverse("api:models")).removesuffix("/models")
    context["base_url"] = base_url
    context["model_ids"] = sorted({serializers.model_id(a) for a in Assistant.objects.all()})
    return render(request, "assistant/tokens.html", context)


@require_http_methods(["GET", "POST"])
@login_required
def tokens(request: AuthenticatedRequest) -> HttpResponse:
    """List your tokens and create one. The raw token is in this one response and nowhere else."""
    if request.method != "POST":
        return _render(request, TokenForm())
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _render(request, form)
    token, raw = services.api_token_create(user=request.user, name=form.cleaned_data["name"])
    return _render(request, TokenForm(), created=token, raw_token=raw)


@require_POST
@login_required
def token_revoke(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    token = _token_or_404(request.user, pk)
    name = token.name
    services.api_token_revoke(token=token)
    if request.htmx:
        return _render(request, TokenForm())
    messages.success(request, f"Revoked the token “{name}”: programs using it can no longer sign in.")
    return redirect("api:tokens")
