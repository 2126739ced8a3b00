"""Per-rail validation of a customer's ``rail_settings`` (the customers app calls this
through the ``CUSTOMER_RAIL_SETTINGS_HOOK`` setting), and the encryption of a bank
account number whatever the rail."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError

from customers.rail_settings import (
    ACCOUNT_LAST4,
    ACCOUNT_NUMBER,
    ACCOUNT_NUMBER_ENCRYPTED,
    account_last4,
    rail_settings_unmask,
)
from rails.ach.crypto import AchDecryptionError, decrypt_text, encrypt_text
from rails.registry import rail_get

# Domestic account numbers (4 to 17 digits in the US) up to IBANs (34 characters), with
# the spaces and hyphens people type.
_ACCOUNT_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]{2,40}[A-Za-z0-9]")


def rail_settings_clean(*, rail: str, rail_settings: dict, previous: dict | None = None) -> dict:
    """Validate and normalise settings for ``rail``: adapters that define
    ``clean_settings(rail_settings) -> dict`` check them; others take them as they are.
    When the adapter's ``settings_match(previous, given)`` says the given settings name
    the same thing as the stored ``previous`` ones (an account number given in clear that
    is already stored encrypted), the stored form is kept, so nothing changes.
    An unknown rail is left to the customer's own ``rail`` field validation.

    Then, whatever the rail, a bank ``account_number`` is encrypted
    (``bank_account_protect``): only the ACH rail uses it, but a number kept for any
    rail is money data and never stored in clear."""
    if not isinstance(rail_settings, dict):
        raise ValidationError("rail_settings must be an object.")
    given = rail_settings_unmask(given=rail_settings, stored=previous)
    if rail in settings.BILLING_RAILS:
        adapter = rail_get(rail)
        match = getattr(adapter, "settings_match", None)
        if previous and match and match(previous, given):
            return previous
        clean = getattr(adapter, "clean_settings", None)
        given = clean(given) if clean else given
    return bank_account_protect(rail_settings=given, previous=previous)


def bank_account_protect(*, rail_settings: dict, previous: dict | None = None) -> dict:
    """The settings with a clear ``account_number`` replaced by ``account_number_encrypted``
    and ``account_last4`` (the ACH rail's own cleaning does the same for its customers).
    The same number as the one stored in ``previous`` keeps its stored ciphertext, so
    saving unchanged settings changes nothing; an encrypted number given (an export
    applied again) must decrypt with the configured keys.

    Raises ``ValidationError`` (never echoing the number) for a number that is not text
    or not 4 to 42 letters, digits, spaces or hyphens, or a ciphertext no key reads."""
    clear = rail_settings.get(ACCOUNT_NUMBER)
    protected = {k: v for k, v in rail_settings.items() if k != ACCOUNT_NUMBER}
    if clear in (None, ""):
        token = protected.get(ACCOUNT_NUMBER_ENCRYPTED)
        if not token:
            return protected
        try:
            number = decrypt_text(token)
        except AchDecryptionError as exc:
            raise ValidationError(
                f"account_number_encrypted: {exc}; enter account_number again."
            ) from None
        return protected | {ACCOUNT_LAST4: account_last4(number)}
    if not isinstance(clear, str):
        raise ValidationError("account_number must be text (quote it: leading zeros matter).")
    number = clear.strip()
    if not _ACCOUNT_TEXT.fullmatch(number):
        raise ValidationError(
            "account_number must be 4 to 42 letters or digits (spaces and hyphens allowed)."
        )
    token = (previous or {}).get(ACCOUNT_NUMBER_ENCRYPTED)
    try:
        same = bool(token) and decrypt_text(token) == number
    except AchDecryptionError:
        same = False
    return protected | {
        ACCOUNT_NUMBER_ENCRYPTED: token if same else encrypt_text(number),
        ACCOUNT_LAST4: account_last4(number),
    }
