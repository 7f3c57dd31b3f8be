"""The OpenAI-compatible API under /v1/ (no trailing slashes: clients append paths) and the tokens page."""

from __future__ import annotations

from django.urls import path

from assistant import api, token_views

app_name = "api"
urlpatterns = [
    path("v1/models", api.models, name="models"),
    path("v1/models/<str:model_id>", api.model, name="model"),
    path("v1/chat/completions", api.chat_completions, name="chat_completions"),
    path("tokens/", token_views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", token_views.token_revoke, name="token_revoke"),
]
