"""Access rules shared by the staff pages of every app (knowledge, evals, review, routing, ops)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse

from common.http import AuthenticatedRequest

# The same type as every signed-in view's: being staff is checked by `staff_required`, not typed.
StaffRequest = AuthenticatedRequest


View = Callable[..., HttpResponse]


def staff_required(view: View) -> View:
    """Anonymous visitors go to the login page; signed-in people who are not staff get 403."""

    @wraps(view)
    def wrapper(request: StaffRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("This page is for staff.")
        return view(request, *args, **kwargs)

    return login_required(wrapper)
