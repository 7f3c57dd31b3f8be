from __future__ import annotations

from django.urls import path

from knowledge import views

app_name = "knowledge"
urlpatterns = [
    path("", views.upload, name="upload"),
    path("documents/<int:pk>/row/", views.document_row, name="document_row"),
    path("documents/<int:pk>/delete/", views.document_delete, name="document_delete"),
    path("retrieval/", views.retrieval, name="retrieval"),
]
