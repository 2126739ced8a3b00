"""The ACH rail: invoices collected by debit entries in a NACHA file for our bank (the
ODFI). ACH is file-based, so the rail's steps are bookkeeping and the money moves in
the file the export builds (``rails.ach.export``):

- ``submit`` schedules the debit: it checks the customer's bank details and answers
  ``submitted`` with the debit date (``ach_effective_date``), see ``ach_effective_date``.
- the export puts every debit due into one file, records its trace number and moves the
  settlement to ``collecting``.
- ``check`` answers ``paid`` once the return window has passed with no return
  (``ACH_RETURN_WINDOW_BANKING_DAYS`` banking days after the debit date); a return file
  (``rails.ach.returns_apply``) moves it to ``returned`` instead, even after that.

Settings (each read when used; the rail is in sandbox while ``ACH_ODFI_ROUTING`` or
``ACH_COMPANY_ID`` is unset): ``ACH_ODFI_ROUTING``, ``ACH_ORIGIN_ID`` (default: the
company id), ``ACH_COMPANY_ID``, ``ACH_COMPANY_NAME``, ``ACH_ODFI_NAME``,
``ACH_RETURN_WINDOW_BANKING_DAYS`` (default 2), ``ACH_TIME_ZONE`` (default
America/New_York: the zone FedACH's banking days are counted in),
``ACH_ENCRYPTION_KEY`` (see ``rails.ach.crypto``).

Bank account numbers are stored encrypted (``account_number_encrypted``) beside their
last four digits; only ``ach_account_number`` decrypts, and only the export calls it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError

from core.money import from_minor_units
from rails.ach.calendar import add_banking_days, is_banking_day, next_banking_day
from rails.ach.crypto import AchDecryptionError, decrypt_text, encrypt_text, masked
from rails.ach.nacha import AchOriginator
from rails.ach.nacha_records import routing_number_validate
from rails.base import CreditNoteDocument, InvoiceDocument, RailResult, Step

ACCOUNT_TYPES = ("checking", "savings")
SEC_CODES = ("CCD", "PPD")
REQUIRED_SETTINGS = ("routing_number", "account_number", "account_type", "mandate_date")
OPTIONAL_SETTINGS = ("sec_code", "account_holder_name", "mandate_id")
STORED_SETTINGS = ("account_number_encrypted", "account_last4")
_ACCOUNT_DIGITS = re.compile(r"[0-9]{4,17}")

# Sandbox originator: obviously not ours, so a sandbox file can never pass for a real one
# (000000013 is a well-formed routing number no bank uses).
SANDBOX_ORIGINATOR = AchOriginator(
    immediate_destination="000000013",
    immediate_destination_name="SANDBOX ODFI",
    immediate_origin="SANDBOX000",
    immediate_origin_name="SANDBOX ORIGINATOR",
    company_name="SANDBOX",
    company_id="SANDBOX000",
    odfi_routing="000000013",
)


# ------------------------------------------------------------------ configuration


def _setting(name: str, default: str = "") -> str:
    return str(getattr(settings, name, "") or default).strip()


def ach_is_sandbox() -> bool:
    """True while the bank details that make a file ours are missing."""
    return not (_setting("ACH_ODFI_ROUTING") and _setting("ACH_COMPANY_ID"))


def ach_originator(*, sandbox: bool) -> AchOriginator:
    """Who sends the file and to which bank: from settings, or placeholders in sandbox.

    Raises ImproperlyConfigured when a live setup lacks ACH_COMPANY_NAME (the routing
    number and ids are checked when the file is built).
    """
    if sandbox:
        return SANDBOX_ORIGINATOR
    routing = _setting("ACH_ODFI_ROUTING")
    company_id = _setting("ACH_COMPANY_ID").upper()
    company_name = _setting("ACH_COMPANY_NAME")
    if not company_name:
        raise ImproperlyConfigured(
            "Set ACH_COMPANY_NAME: the name shown on the customers' bank statements."
        )
    return AchOriginator(
        immediate_destination=routing,
        immediate_destination_name=_setting("ACH_ODFI_NAME"),
        immediate_origin=_setting("ACH_ORIGIN_ID", company_id).upper(),
        immediate_origin_name=company_name,
        company_name=company_name,
        company_id=company_id,
        odfi_routing=routing,
    )


def ach_time_zone() -> ZoneInfo:
    return ZoneInfo(_setting("ACH_TIME_ZONE", "America/New_York"))


def ach_return_window_days() -> int:
    """Banking days after the debit date during which a return is expected (R01, R02...:
    two). Unauthorized-debit returns (R05, R07, R10, R11, R29) may come up to 60 days
    later; they are still applied when they come, and move a paid invoice back to
    payment failed."""
    days = int(getattr(settings, "ACH_RETURN_WINDOW_BANKING_DAYS", 2))
    if days < 0:
        raise ImproperlyConfigured("ACH_RETURN_WINDOW_BANKING_DAYS must be >= 0.")
    return days


def ach_business_date(instant: datetime) -> date:
    """The ACH calendar day `instant` falls on (in ACH_TIME_ZONE)."""
    return instant.astimezone(ach_time_zone()).date()


def ach_start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=ach_time_zone())


def ach_effective_date(*, due_at: datetime | None, now: datetime) -> date:
    """The debit date of an invoice: its due date, or the next banking day when the due
    date is not one, and never before the next banking day after `now` (a file made
    today debits tomorrow at the earliest). Debiting on the due date, not at issue,
    keeps the payment terms the customer signed: the invoice says it is debited on or
    after its due date."""
    earliest = next_banking_day(ach_business_date(now))
    due = ach_business_date(due_at or now)
    on_or_after_due = due if is_banking_day(due) else next_banking_day(due)
    return max(earliest, on_or_after_due)


def ach_paid_after(effective_date: date) -> datetime:
    """When a debit with no return counts as paid: the start of the day after the last
    banking day of the return window, so returns the bank reports on that last day are
    imported first."""
    last = add_banking_days(effective_date, ach_return_window_days())
    return ach_start_of(date.fromordinal(last.toordinal() + 1))


# ------------------------------------------------------------------ bank details


@dataclass(frozen=True)
class AchBankDetails:
    """A customer's bank details as the rail sees them: never the clear account number."""

    routing_number: str
    account_last4: str
    account_type: str
    mandate_date: date
    sec_code: str
    account_holder_name: str = ""

    @property
    def account_masked(self) -> str:
        return masked(self.account_last4)


def _text(value: object, name: str, errors: list[str], *, quote_hint: bool = False) -> str:
    if isinstance(value, str):
        return value.strip()
    hint = " (quote it: leading zeros matter)" if quote_hint else ""
    errors.append(f"{name} must be text{hint}.")
    return ""


def _account_clean(rail_settings: dict, errors: list[str]) -> tuple[str, str]:
    """(token, last4): a new clear number encrypted, or the stored token kept as is."""
    clear = rail_settings.get("account_number")
    if clear not in (None, ""):
        number = _text(clear, "account_number", errors, quote_hint=True)
        if number and not _ACCOUNT_DIGITS.fullmatch(number):
            # Never echo the value: it is the secret this rail keeps.
            errors.append("account_number must be 4 to 17 digits.")
        if errors:
            return "", ""
        return encrypt_text(number), number[-4:]
    token = rail_settings.get("account_number_encrypted")
    if not token:
        errors.append("account_number is required.")
        return "", ""
    try:
        number = decrypt_text(token)
    except AchDecryptionError as exc:
        errors.append(f"account_number_encrypted: {exc}; enter account_number again.")
        return "", ""
    return token, number[-4:]


def ach_settings_clean(rail_settings: dict) -> dict:
    """Validate an ACH customer's settings and encrypt the account number.

    Takes ``routing_number`` (ABA check digit), ``account_number`` (4 to 17 digits),
    ``account_type`` (checking or savings), ``mandate_date`` (YYYY-MM-DD: when the
    customer signed the debit authorization) and optionally ``sec_code`` (CCD, the
    default, for companies; PPD for consumers), ``account_holder_name`` (default: the
    customer's name) and ``mandate_id``. Answers them with ``account_number`` replaced
    by ``account_number_encrypted`` and ``account_last4``. Settings that already hold
    the encrypted form are kept as they are, so cleaning twice changes nothing; a new
    ``account_number`` replaces the stored one.

    Raises ValidationError listing every problem (never the account number itself).
    """
    if not isinstance(rail_settings, dict):
        raise ValidationError("rail_settings must be an object.")
    errors: list[str] = []
    allowed = {*REQUIRED_SETTINGS, *OPTIONAL_SETTINGS, *STORED_SETTINGS}
    unknown = sorted(set(rail_settings) - allowed)
    if unknown:
        errors.append(
            f"Unknown ACH setting(s): {', '.join(unknown)} "
            f"(allowed: {', '.join(REQUIRED_SETTINGS + OPTIONAL_SETTINGS)})."
        )
    for name in ("routing_number", "account_type", "mandate_date"):
        if rail_settings.get(name) in (None, ""):
            errors.append(f"{name} is required.")
    routing = _text(
        rail_settings.get("routing_number", ""), "routing_number", errors, quote_hint=True
    )
    if routing:
        try:
            routing_number_validate(routing)
        except ValueError as exc:
            errors.append(f"{str(exc)[0].upper()}{str(exc)[1:]}.")
    account_type = rail_settings.get("account_type")
    if account_type not in (None, "") and account_type not in ACCOUNT_TYPES:
        errors.append(f"account_type must be checking or savings, not {account_type!r}.")
    mandate = _text(rail_settings.get("mandate_date", ""), "mandate_date", errors)
    mandate_date = None
    if mandate:
        try:
            mandate_date = date.fromisoformat(mandate)
        except ValueError:
            errors.append(f"mandate_date {mandate!r} is not a date (YYYY-MM-DD).")
    sec_code = rail_settings.get("sec_code")
    if sec_code is not None and str(sec_code).upper() not in SEC_CODES:
        errors.append(f"sec_code must be CCD (companies) or PPD (consumers), not {sec_code!r}.")
    holder = rail_settings.get("account_holder_name")
    if holder is not None and not (isinstance(holder, str) and holder.strip()):
        errors.append("account_holder_name must be a non-empty text when given.")
    if errors:  # before encrypting, so a bad routing number is reported on its own
        raise ValidationError(errors)
    token, last4 = _account_clean(rail_settings, errors)
    if errors:
        raise ValidationError(errors)
    cleaned = {
        "routing_number": routing,
        "account_number_encrypted": token,
        "account_last4": last4,
        "account_type": account_type,
        "mandate_date": mandate_date.isoformat() if mandate_date else mandate,
    }
    if sec_code is not None:
        cleaned["sec_code"] = str(sec_code).upper()
    if holder is not None:
        cleaned["account_holder_name"] = holder.strip()
    if rail_settings.get("mandate_id") not in (None, ""):
        cleaned["mandate_id"] = str(rail_settings["mandate_id"]).strip()
    return cleaned


def ach_bank_details(rail_settings: dict) -> AchBankDetails:
    """The stored settings checked (the account number decrypts) and summarised.

    Raises ValidationError when they are incomplete, unencrypted or unreadable.
    """
    if rail_settings.get("account_number") not in (None, ""):
        raise ValidationError(
            "The account number is stored unencrypted: save the customer again "
            "(admin or API) so it is encrypted."
        )
    cleaned = ach_settings_clean(rail_settings)
    return AchBankDetails(
        routing_number=cleaned["routing_number"],
        account_last4=cleaned["account_last4"],
        account_type=cleaned["account_type"],
        mandate_date=date.fromisoformat(cleaned["mandate_date"]),
        sec_code=cleaned.get("sec_code", "CCD"),
        account_holder_name=cleaned.get("account_holder_name", ""),
    )


def ach_account_number(rail_settings: dict) -> str:
    """The clear account number, for building a NACHA file and nothing else: never log
    it, store it or show it.

    Raises ValidationError when the settings hold no readable encrypted number.
    """
    token = rail_settings.get("account_number_encrypted")
    if not token:
        raise ValidationError("No encrypted account number in the customer's ACH settings.")
    try:
        return decrypt_text(token)
    except AchDecryptionError as exc:
        raise ValidationError(f"account_number_encrypted: {exc}.") from None


def ach_settings_match(stored: dict, given: dict) -> bool:
    """True when `given` (with a clear ``account_number`` or the encrypted form) names the
    same bank details as `stored`. Encryption is randomised, so comparing the stored
    settings with freshly cleaned ones would always see a change: configuration-as-code
    compares with this instead."""
    try:
        wanted, current = ach_settings_clean(given), ach_settings_clean(stored)
    except ValidationError:
        return False

    def without_token(cleaned: dict) -> dict:
        return {k: v for k, v in cleaned.items() if k != "account_number_encrypted"}

    return without_token(wanted) == without_token(current) and ach_account_number(
        wanted
    ) == ach_account_number(current)


def _messages(exc: ValidationError) -> str:
    return " ".join(exc.messages)


def _money(minor: int) -> str:
    return f"${from_minor_units(minor, 'USD'):,}"


# ------------------------------------------------------------------ the rail


class AchRail:
    key = "ach"

    def is_sandbox(self) -> bool:
        return ach_is_sandbox()

    def clean_settings(self, rail_settings: dict) -> dict:
        return ach_settings_clean(rail_settings)

    def settings_match(self, stored: dict, given: dict) -> bool:
        """Given in clear, the same details as stored: keep the stored encryption. Given
        already encrypted (a key rotation, an export re-applied), the given form is used."""
        return "account_number" in given and ach_settings_match(stored, given)

    def submit(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        """Schedule the debit; the export puts it in a file. No side effects, so a
        retried step answers the same."""
        sandbox = self.is_sandbox()
        if invoice.currency != "USD":
            return RailResult(
                outcome="failed",
                retryable=False,
                sandbox=sandbox,
                error=f"ACH debits are in USD only; invoice {invoice.number} is in "
                f"{invoice.currency}. Settle it on another rail.",
            )
        try:
            details = ach_bank_details(invoice.customer.rail_settings)
        except ValidationError as exc:
            return RailResult(
                outcome="failed",
                retryable=False,
                sandbox=sandbox,
                error=f"Customer {invoice.customer.key} has no usable ACH bank details: "
                f"{_messages(exc)} Fix the customer's rail settings, then retry.",
            )
        if invoice.amount_due_minor <= 0:
            return RailResult(
                outcome="paid", sandbox=sandbox, note="Nothing to debit: amount due is 0."
            )
        effective = ach_effective_date(due_at=invoice.due_at, now=step.now)
        return RailResult(
            outcome="submitted",
            external_ids={"ach_effective_date": effective.isoformat()},
            next_check_at=ach_start_of(effective),
            sandbox=sandbox,
            note=f"ACH {details.sec_code} debit of {_money(invoice.amount_due_minor)} from "
            f"{details.account_type} account {details.account_masked} (routing "
            f"{details.routing_number}) scheduled for {effective.isoformat()}; it goes to the "
            "bank in the ACH export before that day"
            + (" (sandbox: placeholder originator, nothing is sent)." if sandbox else "."),
        )

    def check(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        ids = step.external_ids
        if not ids.get("ach_trace_number"):
            return RailResult(
                outcome="pending",
                note=f"Waiting for the ACH export (debit date {ids.get('ach_effective_date')}).",
            )
        effective = date.fromisoformat(ids["ach_effective_date"])
        paid_after = ach_paid_after(effective)
        if step.now < paid_after:
            return RailResult(outcome="pending", next_check_at=paid_after)
        return RailResult(
            outcome="paid",
            note=f"No return for trace {ids['ach_trace_number']} within "
            f"{ach_return_window_days()} banking days of the debit date {effective.isoformat()}: "
            "paid. A late unauthorized-debit return can still reopen it.",
        )

    def void(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        ids = step.external_ids
        if not ids.get("ach_trace_number"):
            return RailResult(
                outcome="voided", note="The scheduled ACH debit was cancelled before export."
            )
        return RailResult(
            outcome="failed",
            retryable=False,
            error=f"The debit for invoice {invoice.number} is already in ACH file "
            f"{ids.get('ach_file_name', ids.get('ach_file_id'))} (trace {ids['ach_trace_number']}, "
            f"debit date {ids.get('ach_effective_date')}): an ACH debit cannot be recalled once "
            "it is handed to the bank. Ask the bank for a reversal, or refund the customer.",
        )

    def credit(
        self, *, credit_note: CreditNoteDocument, invoice: InvoiceDocument, step: Step
    ) -> RailResult:
        amount = _money(credit_note.amount_minor)
        if step.external_ids.get("ach_trace_number"):
            note = (
                f"Credit note {credit_note.number} ({amount}): a refund by ACH credit must be "
                "sent by the bank; recorded."
            )
        else:
            note = (
                f"Credit note {credit_note.number} ({amount}) recorded; the ACH debit, not yet "
                "exported, is reduced by it."
            )
        return RailResult(outcome="submitted", note=note, sandbox=self.is_sandbox())
