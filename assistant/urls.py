from __future__ import annotations

from django.urls import path

from assistant import views

app_name = "assistant"
urlpatterns = [
    path("", views.home, name="home"),
    path("new/", views.conversation_new, name="new"),
    path("c/<int:pk>/", views.conversation_detail, name="conversation"),
    path("send/", views.message_send, name="send"),
    path("c/<int:pk>/send/", views.message_send, name="send"),
    path("messages/<int:pk>/", views.message_detail, name="message"),
    path("messages/<int:pk>/stream/", views.message_stream, name="message_stream"),
    path("messages/<int:pk>/stop/", views.message_stop, name="message_stop"),
    path("messages/<int:pk>/retry/", views.message_retry, name="message_retry"),
    path("messages/<int:pk>/regenerate/", views.answer_regenerate, name="regenerate"),
    path("answers/<int:pk>/sources/<int:n>/", views.answer_source, name="source"),
    path("answers/<int:pk>/feedback/", views.answer_feedback, name="feedback"),
    path("answers/<int:pk>/flag/", views.answer_flag, name="flag"),
    path("answers/<int:pk>/replay/", views.answer_replay, name="replay"),
    path("notice/", views.notice_toggle, name="notice"),
]
