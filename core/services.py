from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models.signals import post_delete, post_save

from core.models import ApiKey, ApiKeyScope
from core.raw_redis import raw_redis

SECRET_PREFIX = "ubk"
# Active keys are cached (Redis, and each process's memory) for at most this long, under
# a generation that any change to any key moves; see _api_key_cached.
API_KEY_CACHE_SECONDS = 300


@dataclass(frozen=True)
class IssuedApiKey:
    api_key: ApiKey
    secret: str  # shown once, never stored


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_scopes_validate(scopes: Iterable[str]) -> list[str]:
    """Return the scopes de-duplicated in canonical order, or raise ``ValidationError``."""
    wanted = {s.strip() for s in scopes if s.strip()}
    unknown = wanted - set(ApiKeyScope.values)
    if unknown:
        raise ValidationError(
            {
                "scopes": f"Unknown scope(s): {', '.join(sorted(unknown))}. "
                f"Choose from: {', '.join(ApiKeyScope.values)}."
            }
        )
    if not wanted:
        raise ValidationError({"scopes": "Give the key at least one scope."})
    return [s for s in ApiKeyScope.values if s in wanted]


def api_key_create(*, name: str, scopes: Iterable[str], created_by=None) -> IssuedApiKey:
    """Create a key and return it with its secret, which is never retrievable again."""
    if not name.strip():
        raise ValidationError({"name": "Give the key a name."})
    scope_list = api_key_scopes_validate(scopes)
    prefix = secrets.token_hex(6)
    secret = f"{SECRET_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        name=name.strip(),
        prefix=prefix,
        secret_hash=_digest(secret),
        scopes=scope_list,
        created_by=created_by,
    )
    return IssuedApiKey(api_key=key, secret=secret)


# -- the API key cache ----------------------------------------------------------------
#
# Every API request authenticates, so the active key is cached: in Redis (Django's
# cache) and in each process's memory, under a generation number that moves after any
# change to any key commits (a revocation, a save, a delete). A request reads the
# generation (one Redis GET) and then the key under it. Entries are written under the
# generation read *before* the database was read, so one written from a state older than
# a committed change is under a generation nobody reads once that change has moved it.
# While a connection holds uncommitted changes to keys, it reads them from the database.


_local: dict[str, ApiKey] = {}
_local_generation: list[int] = [0]
_last_used_checked: dict[int, datetime] = {}
_lock = threading.Lock()


def _cache_namespace() -> str:
    # one Redis may serve several databases (tests, benchmarks, development); the model's
    # fields are in it so that a deploy that changes them never reads older pickles
    return f"api-keys:{connections[DEFAULT_DB_ALIAS].settings_dict['NAME']}:{_fields_tag()}"


@functools.cache
def _fields_tag() -> str:
    fields = ",".join(f.attname for f in ApiKey._meta.concrete_fields)
    return hashlib.sha256(fields.encode()).hexdigest()[:8]


def _api_keys_generation() -> int:
    key = f"{_cache_namespace()}:generation"
    client = raw_redis()
    if client is not None:
        raw = client.get(cache.make_key(key))
        if raw is not None:
            return int(raw)
    current = cache.get(key)
    if current is None:
        # from the clock: a generation key lost from Redis never returns to an old number
        cache.add(key, time.time_ns(), timeout=None)
        current = cache.get(key)
    return int(current)


def _api_keys_bump() -> None:
    key = f"{_cache_namespace()}:generation"
    try:
        cache.incr(key)
    except ValueError:
        cache.add(key, time.time_ns(), timeout=None)


def _api_keys_changed(**_kwargs) -> None:
    """After any change to a key: move the generation when the transaction commits (at
    once outside one); until then this connection reads keys from the database."""
    if not _api_keys_pending():
        transaction.on_commit(_api_keys_bump)


def _api_keys_pending() -> bool:
    if not connection.in_atomic_block:
        return False
    return any(entry[1] is _api_keys_bump for entry in connection.run_on_commit)


post_save.connect(_api_keys_changed, sender=ApiKey, dispatch_uid="api-key-cache:save")
post_delete.connect(_api_keys_changed, sender=ApiKey, dispatch_uid="api-key-cache:delete")


def _api_key_cached(prefix: str) -> ApiKey | None:
    """The active key with ``prefix`` (None when there is none, which is not cached)."""
    generation = _api_keys_generation()
    key = f"{_cache_namespace()}:{generation}:{prefix}"
    found = _local.get(key) if _local_generation[0] == generation else None
    if found is None:
        found = cache.get(key)
        if found is None:
            found = ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).first()
            if found is None:
                return None
            cache.set(key, found, timeout=API_KEY_CACHE_SECONDS)
        with _lock:
            if _local_generation[0] != generation or len(_local) > 10_000:
                _local.clear()
                _local_generation[0] = generation
            _local[key] = found
    return found


def _last_used_record(key: ApiKey, now: datetime) -> None:
    """Write ``last_used_at`` at most once per resolution per key across every process:
    each process asks at most once per resolution, and one Redis ``add`` elects the
    writer."""
    resolution = settings.API_KEY_LAST_USED_RESOLUTION
    checked = _last_used_checked.get(key.pk)
    if checked is not None and abs(now - checked) < resolution:
        return
    _last_used_checked[key.pk] = now
    if cache.add(
        f"{_cache_namespace()}:used:{key.pk}", 1, timeout=int(resolution.total_seconds()) or 1
    ):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)


def api_key_authenticate(*, secret: str, now: datetime) -> ApiKey | None:
    """Return the active key that ``secret`` belongs to, or None.

    Records the last-used time at most once per ``API_KEY_LAST_USED_RESOLUTION``, so a
    busy gateway does not turn every request into a write. The key is read from a cache
    that any change to a key (revocation included) invalidates once it commits.
    """
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != SECRET_PREFIX:
        return None
    if _api_keys_pending():
        return _api_key_authenticate_uncached(prefix=parts[1], secret=secret, now=now)
    key = _api_key_cached(parts[1])
    if key is None or not hmac.compare_digest(key.secret_hash, _digest(secret)):
        return None
    _last_used_record(key, now)
    return key


def _api_key_authenticate_uncached(*, prefix: str, secret: str, now: datetime) -> ApiKey | None:
    key = ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).first()
    if key is None or not hmac.compare_digest(key.secret_hash, _digest(secret)):
        return None
    resolution = settings.API_KEY_LAST_USED_RESOLUTION
    if key.last_used_at is None or now - key.last_used_at >= resolution:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def api_key_revoke(*, api_key: ApiKey, now: datetime) -> ApiKey:
    """Revoke a key from ``now`` on. Revoking a revoked key changes nothing. The key is
    refused from the moment the revocation commits, by every process."""
    if api_key.revoked_at is None:
        updated = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
            revoked_at=now
        )
        if updated:
            _api_keys_changed()  # an update sends no signal
        api_key.refresh_from_db(fields=["revoked_at"])
    return api_key
