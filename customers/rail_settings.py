"""Bank details in a customer's ``rail_settings``: how they are stored and shown.

Whatever the rail (ACH debits from it; a Stripe, NetSuite or manual customer may carry
one for refunds or the ERP), a bank account number is stored encrypted, as
``account_number_encrypted`` beside its last four characters ``account_last4``: the
rails' settings hook encrypts it when the customer is saved (customers cannot import the
keys). Shown anywhere (the API, the admin, logs) it is a mask, ``****6789``, never the
number and never the ciphertext.

A mask given back (an API client that sends back what it read, an admin form saved as
it was shown) means "the number stored": ``rail_settings_unmask`` swaps it for the
stored encrypted form before anything validates it. A mask that does not match the
stored number is refused: a new number is given in full.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

ACCOUNT_NUMBER = "account_number"
ACCOUNT_NUMBER_ENCRYPTED = "account_number_encrypted"
ACCOUNT_LAST4 = "account_last4"
MASK = "****"
# "****6789", and the bullets some screens use ("••••6789"); a mask of nothing: "****".
_MASKED = re.compile(r"(?:\*{2,}|•{2,})([A-Za-z0-9]{0,4})")


def account_last4(number: str) -> str:
    """The last four letters or digits of an account number (spaces, hyphens skipped)."""
    return "".join(ch for ch in number if ch.isalnum())[-4:]


def account_masked(last4: str) -> str:
    """How an account number is shown anywhere but inside a bank file: ``****6789``."""
    return f"{MASK}{last4}" if last4 else MASK


def account_number_is_masked(value: object) -> bool:
    return isinstance(value, str) and _MASKED.fullmatch(value.strip()) is not None


def rail_settings_shown(rail_settings: dict | None) -> dict:
    """The settings as the API and the admin show them: the account number masked, the
    ciphertext left out (a clear number stored by mistake is masked too)."""
    settings = dict(rail_settings or {})
    token = settings.pop(ACCOUNT_NUMBER_ENCRYPTED, None)
    clear = settings.get(ACCOUNT_NUMBER)
    if token or clear:
        last4 = settings.get(ACCOUNT_LAST4) or (
            account_last4(clear) if isinstance(clear, str) else ""
        )
        settings[ACCOUNT_NUMBER] = account_masked(last4)
    return settings


def rail_settings_unmask(*, given: dict, stored: dict | None) -> dict:
    """``given`` with a masked ``account_number`` replaced by the stored one (its
    ciphertext; or the number itself when it was stored in clear, before anything
    encrypted it, so that saving encrypts it).

    Raises ``ValidationError`` when the mask does not match the stored number (or
    nothing is stored): the mask cannot say which account is meant."""
    if not isinstance(given, dict) or not account_number_is_masked(given.get(ACCOUNT_NUMBER)):
        return given
    stored = stored or {}
    token, clear = stored.get(ACCOUNT_NUMBER_ENCRYPTED), stored.get(ACCOUNT_NUMBER)
    if token:
        last4, keep = stored.get(ACCOUNT_LAST4, ""), {ACCOUNT_NUMBER_ENCRYPTED: token}
    elif isinstance(clear, str) and clear.strip():
        last4, keep = account_last4(clear), {ACCOUNT_NUMBER: clear}
    else:
        last4, keep = "", {}
    shown = _MASKED.fullmatch(given[ACCOUNT_NUMBER].strip()).group(1)
    if not keep or (shown and shown != last4):
        held = f" (the stored one is {account_masked(last4)})" if keep else ""
        raise ValidationError(
            f"account_number {given[ACCOUNT_NUMBER]!r} is a masked value that matches no "
            f"stored account number{held}: give the full number to set it."
        )
    unmasked = {k: v for k, v in given.items() if k != ACCOUNT_NUMBER}
    return unmasked | keep | ({ACCOUNT_LAST4: last4} if token else {})


__all__ = [
    "ACCOUNT_LAST4",
    "ACCOUNT_NUMBER",
    "ACCOUNT_NUMBER_ENCRYPTED",
    "account_last4",
    "account_masked",
    "account_number_is_masked",
    "rail_settings_shown",
    "rail_settings_unmask",
]
