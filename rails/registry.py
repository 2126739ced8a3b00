"""Rail adapters by key, from ``settings.BILLING_RAILS`` (dotted paths), loaded once.

A third-party rail is added by naming its class in that setting; nothing in the core
changes. Each class is instantiated without arguments and reads its own settings.
"""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from rails.base import Rail


@lru_cache(maxsize=64)
def _load(key: str, path: str) -> Rail:
    adapter = import_string(path)()
    if not isinstance(adapter, Rail):
        raise ImproperlyConfigured(
            f"BILLING_RAILS[{key!r}] = {path} does not implement rails.base.Rail."
        )
    return adapter


def rail_get(key: str) -> Rail:
    """The adapter for ``key``; raises ``ImproperlyConfigured`` for an unknown rail."""
    try:
        path = settings.BILLING_RAILS[key]
    except KeyError as exc:
        raise ImproperlyConfigured(
            f"No rail {key!r} in BILLING_RAILS ({', '.join(settings.BILLING_RAILS)})."
        ) from exc
    return _load(key, path)


def rail_cache_clear() -> None:
    _load.cache_clear()
