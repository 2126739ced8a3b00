"""Encryption at rest for ACH bank account numbers and the NACHA files that carry them.

Fernet (AES-128-CBC + HMAC-SHA256, from the ``cryptography`` package) with keys derived
by HKDF-SHA256 from a secret:

- ``settings.ACH_ENCRYPTION_KEY`` when set: one secret, or several separated by commas
  (or a list). The first encrypts; every one of them decrypts.
- otherwise ``settings.SECRET_KEY``, then each of ``settings.SECRET_KEY_FALLBACKS``.

Rotation: put the new secret first and keep the old ones after it, run
``python manage.py ach_encryption_rotate`` (re-encrypts every stored account number and
file under the first secret), then drop the old secrets. The limits: a token stays
readable only while the secret that made it is listed; rotating ``SECRET_KEY`` without
moving the old value to ``SECRET_KEY_FALLBACKS`` (or into ``ACH_ENCRYPTION_KEY``) makes
every stored account number unreadable, and the customers' bank details must then be
entered again. Setting ``ACH_ENCRYPTION_KEY`` for the first time is a rotation too: list
the old ``SECRET_KEY`` after the new key until the rotate command has run.

Nothing here logs or echoes a clear value; errors name what failed, never the data.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from customers.rail_settings import account_masked

# Binds derived keys to this use: the same SECRET_KEY yields unrelated keys elsewhere.
_HKDF_INFO = b"usage-billing/rails/ach/bank-account/v1"


class AchDecryptionError(ValueError):
    """A stored token that none of the configured secrets can read (or a malformed one)."""


def _secrets() -> tuple[str, ...]:
    configured = getattr(settings, "ACH_ENCRYPTION_KEY", "") or ""
    if isinstance(configured, str):
        secrets = [part.strip() for part in configured.split(",")]
    elif isinstance(configured, Sequence):
        secrets = [str(part).strip() for part in configured]
    else:
        raise ImproperlyConfigured("ACH_ENCRYPTION_KEY must be a string or a list of strings.")
    secrets = [secret for secret in secrets if secret]
    if not secrets:
        secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    if not secrets or not secrets[0]:
        raise ImproperlyConfigured("Set ACH_ENCRYPTION_KEY (or SECRET_KEY) to store bank details.")
    return tuple(secrets)


def _derived(secret: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        secret.encode("utf-8")
    )
    return Fernet(base64.urlsafe_b64encode(key))


@lru_cache(maxsize=8)
def _fernet(secrets: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_derived(secret) for secret in secrets])


def _current() -> MultiFernet:
    # Keyed on the secrets themselves, so a changed setting (or a test override) is seen.
    return _fernet(_secrets())


def encrypt_text(plain: str) -> str:
    """`plain` encrypted under the first configured secret (a Fernet token, ASCII)."""
    return _current().encrypt(plain.encode("utf-8")).decode("ascii")


def decrypt_text(token: str) -> str:
    """The clear text of a token made by `encrypt_text` under any configured secret.

    Raises AchDecryptionError when no configured secret reads it.
    """
    if not isinstance(token, str) or not token:
        raise AchDecryptionError("the encrypted value is missing or not text")
    try:
        return _current().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError, ValueError):
        raise AchDecryptionError(
            "the encrypted value cannot be decrypted with the configured keys "
            "(ACH_ENCRYPTION_KEY / SECRET_KEY changed without keeping the old one?)"
        ) from None


def rotate_text(token: str) -> str:
    """`token` re-encrypted under the first configured secret.

    Raises AchDecryptionError when no configured secret reads it.
    """
    try:
        return _current().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError, ValueError):
        raise AchDecryptionError(
            "the encrypted value cannot be decrypted with the configured keys"
        ) from None


def masked(last4: str) -> str:
    """How an account number is shown anywhere but inside a NACHA file: ``****1234``
    (``customers.rail_settings.account_masked``, the one rule for every rail)."""
    return account_masked(last4)
