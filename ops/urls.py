from __future__ import annotations

from django.urls import path

from ops import views

app_name = "ops"
urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("ops/", views.dashboard, name="dashboard"),
    path("metrics", views.metrics_view, name="metrics"),
]
