"""The request type of views behind `login_required`: the project's User, with django-htmx's details.

`HttpRequest.user` is `User | AnonymousUser` to mypy; behind `login_required` (or `staff_required`)
it is always a signed-in `User`, and `HtmxMiddleware` adds `htmx`. Views annotate their request
with this class to say so once, rather than narrowing `request.user` in every view.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class AuthenticatedRequest(HttpRequest):
    """What a view behind `login_required` receives: a signed-in user, with django-htmx's details."""

    user: User
    htmx: HtmxDetails
