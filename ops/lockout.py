"""The sign-in lockout page: the login form again, saying what is locked and until when.

django-axes counts failed sign-ins per account and per address (settings: `AXES_*`) and refuses
a locked one before its password is checked; its middleware then asks `lockout_response` (named
by `AXES_LOCKOUT_CALLABLE`) for the page. Rather than axes' plain 429 text, the person gets the
same login page they used (ours or the admin's), with an empty form and a message naming the
account or the address and the time the lock lifts, and a `Retry-After` header for programs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from common.addresses import client_ip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lockout:
    """What is locked (the account, the address, or both) and when the last lock lifts."""

    username: str | None
    account: bool
    address: bool
    until: datetime


def _lifts_at(attempts: list[tuple[datetime, int]], limit: int, cool_off: timedelta) -> datetime | None:
    """When failures drop below the limit, or None if they are below it already.

    axes keeps one row per account, address and browser with its failure count and the time of its
    last failure, and counts a row until `cool_off` after that time; rows therefore lapse whole,
    oldest first.
    """
    remaining = sum(failures for _, failures in attempts)
    if remaining < limit:
        return None
    for last_failure, failures in sorted(attempts):
        remaining -= failures
        if remaining < limit:
            return last_failure + cool_off
    raise AssertionError("unreachable: every row lapses eventually")


def _failures(now: datetime, cool_off: timedelta, **match: str) -> list[tuple[datetime, int]]:
    rows = AccessAttempt.objects.filter(attempt_time__gte=now - cool_off, **match)
    return list(rows.values_list("attempt_time", "failures_since_start"))


def lockout_find(
    *, username: str | None, ip_address: str | None, limit: int, cool_off: timedelta
) -> Lockout | None:
    """The lockout that holds now for this account or address, as django-axes' database handler counts."""
    now = timezone.now()
    by_account = _lifts_at(_failures(now, cool_off, username=username), limit, cool_off) if username else None
    by_address = (
        _lifts_at(_failures(now, cool_off, ip_address=ip_address), limit, cool_off) if ip_address else None
    )
    lifts = [moment for moment in (by_account, by_address) if moment is not None]
    if not lifts:
        return None
    return Lockout(
        username=username, account=by_account is not None, address=by_address is not None, until=max(lifts)
    )


def lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict[str, Any] | None = None,
) -> HttpResponse:
    """The login page that refused the sign-in, with an empty form and the lockout message (429)."""
    username = get_client_username(request, credentials) or None
    ip_address = getattr(request, "axes_ip_address", None) or client_ip(request)
    cool_off = get_cool_off(request)
    assert cool_off is not None, "AXES_COOLOFF_TIME is always set (settings.py)"
    lockout = lockout_find(
        username=username,
        ip_address=ip_address,
        limit=get_failure_limit(request, credentials),
        cool_off=cool_off,
    )
    if lockout is None:
        # Axes says locked but no rows say so: a custom handler or a reset in between. Say the
        # least that is true.
        lockout = Lockout(username=username, account=False, address=False, until=timezone.now() + cool_off)
    logger.warning(
        "sign-in refused while locked: account=%r address=%s path=%s until=%s",
        username,
        ip_address,
        request.path,
        lockout.until.isoformat(timespec="seconds"),
    )
    retry_after = str(max(1, math.ceil((lockout.until - timezone.now()).total_seconds())))
    if isinstance(original_response, TemplateResponse) and original_response.context_data is not None:
        form = original_response.context_data.get("form")
        context = dict(original_response.context_data)
        if form is not None:
            # A fresh form: the bound one says "enter a correct password", which is not why.
            context["form"] = type(form)(request, initial={"username": username or ""})
        context["lockout"] = lockout
        page = TemplateResponse(request, original_response.template_name, context, status=429)
        page.render()
        page["Retry-After"] = retry_after
        return page
    refused = HttpResponse(
        f"Too many failed sign-ins: try again after {lockout.until:%H:%M} UTC.",
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    refused["Retry-After"] = retry_after
    return refused
