"""Moving the clock of a few modules only, for tests about time in views: the rest of
Django (sessions, the admin login) keeps the real clock."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone


class ModuleClock:
    """``django.utils.timezone`` as one module sees it, with ``now`` moved."""

    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def __getattr__(self, name):
        return getattr(timezone, name)


def clock_move(monkeypatch, modules: tuple[str, ...], now: datetime) -> None:
    """Every module of ``modules`` reads ``now`` from ``timezone.now()`` until the test ends."""
    for module in modules:
        monkeypatch.setattr(f"{module}.timezone", ModuleClock(now))
