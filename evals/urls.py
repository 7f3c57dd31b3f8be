from __future__ import annotations

from django.urls import path

from evals import views

app_name = "evals"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("suites/<int:pk>/", views.suite_detail, name="suite"),
    path("suites/<int:pk>/runs/", views.run_start, name="run_start"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    path("runs/<int:pk>/progress/", views.run_progress, name="run_progress"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<int:pk>/rerun/", views.run_rerun, name="run_rerun"),
]
