from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError

from core.models import ApiKey, ApiKeyScope

SECRET_PREFIX = "ubk"


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


def api_key_authenticate(*, secret: str, now: datetime) -> ApiKey | None:
    """Return the active key that ``secret`` belongs to, or None.

    Records the last-used time at most once per ``API_KEY_LAST_USED_RESOLUTION``, so a
    busy gateway does not turn every request into a write.
    """
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != SECRET_PREFIX:
        return None
    key = ApiKey.objects.filter(prefix=parts[1], revoked_at__isnull=True).first()
    if key is None or not hmac.compare_digest(key.secret_hash, _digest(secret)):
        return None
    resolution = settings.API_KEY_LAST_USED_RESOLUTION
    if key.last_used_at is None or now - key.last_used_at >= resolution:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def api_key_revoke(*, api_key: ApiKey, now: datetime) -> ApiKey:
    """Revoke a key from ``now`` on. Revoking a revoked key changes nothing."""
    if api_key.revoked_at is None:
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
        api_key.refresh_from_db(fields=["revoked_at"])
    return api_key
