"""The user type every app's signatures name.

The project keeps Django's own user model (`AUTH_USER_MODEL` is not set), so `User` is
`django.contrib.auth.models.User`. `AnyUser` is what `request.user` is: that, or the anonymous
user; functions that decide what someone may read take it, since "not signed in" is an answer
they must give (public collections only), not an error.
"""

from __future__ import annotations

from typing import TypeAlias

from django.contrib.auth.models import AnonymousUser, User

AnyUser: TypeAlias = User | AnonymousUser

__all__ = ["AnyUser", "User"]
