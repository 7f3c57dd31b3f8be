from __future__ import annotations

from django.urls import path

from review import views

app_name = "review"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("answers/<int:pk>/", views.item, name="item"),
]
urlpatterns += [
    path(f"answers/<int:pk>/{action}/", views.act, {"action": action}, name=action)
    for action in ("approve", "correct", "reject", "escalate", "assign")
]
