"""Who is behind the current request, for the rows that record a change.

django-simple-history's ``HistoryRequestMiddleware`` keeps the request for the thread.
In the admin its user is a staff member; through the API, DRF replaces the request's
user with the API key's principal, which is not a ``User``; Celery tasks and commands
have no request. Audit's history records and billing's bulk history rows both ask here.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from simple_history.models import HistoricalRecords


def _request():
    return getattr(HistoricalRecords.context, "request", None)


def request_user(request=None, **kwargs) -> AbstractBaseUser | None:
    """The signed-in user behind the current request, or None (no request, an anonymous
    visitor, or an API key)."""
    request = request or _request()
    user = getattr(request, "user", None)
    if isinstance(user, AbstractBaseUser) and user.is_authenticated:
        return user
    return None


def request_api_key_name() -> str:
    """``api key <prefix>`` when the current request was authenticated by an API key."""
    user = getattr(_request(), "user", None)
    if getattr(user, "api_key", None) is not None:
        return f"API key {user.username.removeprefix('api-key:')}"
    return ""
