from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("", include("assistant.urls")),
    path("", include("assistant.api_urls")),
    path("", include("ops.urls")),
    path("knowledge/", include("knowledge.urls")),
    path("evals/", include("evals.urls")),
    path("review/", include("review.urls")),
    path("routing/", include("routing.urls")),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]

admin.site.site_header = "Groundwork administration"
admin.site.site_title = "Groundwork"
