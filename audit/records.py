"""How a history row learns who made the change.

``HistoryRequestMiddleware`` keeps the request for the thread. In the admin its user is a
staff member: the row's ``history_user``. Through the API, DRF replaces the request's user
with the API key's principal, which is not a ``User``: the row then has no user and
names the key in its change reason. Celery tasks and commands have no request: no user
(the row's date and reason still tell what happened). Who is behind the current request
is ``core.current_request``'s to answer, so that billing's bulk writes can ask it too.
"""

from __future__ import annotations

from simple_history.models import HistoricalRecords

from core.current_request import request_api_key_name, request_user


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
