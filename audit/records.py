"""How a history row learns who made the change.

``HistoryRequestMiddleware`` keeps the request for the thread. In the admin its user is a
staff member: the row's ``history_user``. Through the API, DRF replaces the request's user
with the API key's principal, which is not a ``User``: the row then has no user and
names the key in its change reason. Celery tasks and commands have no request: no user
(the row's date and reason still tell what happened).
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


class AuditRecords(HistoricalRecords):
    """``HistoricalRecords`` that never puts an API key's principal in ``history_user``
    and names the key in the change reason instead."""

    def __init__(self, *, record_if=None, **kwargs) -> None:
        """``record_if(instance)``: whether a save or delete of that row is recorded
        (default: every one)."""
        kwargs.setdefault("get_user", request_user)
        super().__init__(**kwargs)
        self.record_if = record_if

    def post_save(self, instance, created, using=None, **kwargs):
        # A save of only untracked bookkeeping (a rendered PDF, a touched updated_at)
        # changes nothing the history shows: no row.
        fields = kwargs.get("update_fields")
        if not created and fields and set(fields) <= {*self.excluded_fields, "updated_at"}:
            return
        if self.record_if is None or self.record_if(instance):
            super().post_save(instance, created, using=using, **kwargs)

    def post_delete(self, instance, using=None, **kwargs):
        if self.record_if is None or self.record_if(instance):
            super().post_delete(instance, using=using, **kwargs)

    def get_change_reason_for_object(self, instance, history_type, using):
        reason = super().get_change_reason_for_object(instance, history_type, using)
        return reason or request_api_key_name()
