"""Applying a bank's NACHA return file: each returned debit fails its invoice.

Each return names the trace number of our entry; the entry names its settlement, which
is reported ``returned`` (the invoice becomes ``payment_failed``), even after the return
window made it paid: a late unauthorized-debit return (R05, R07, R10, R29...) reopens it.
A trace number we never exported is reported, not fatal. Applying the same file again
changes nothing: an entry records its return once. Notifications of change (NOC) move no
money; they are recorded on their entry for an operator to update the bank details
(corrected account numbers are not stored: they are in the bank's file).

The whole file is applied in one transaction: a file that fails half way applies nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from core.money import from_minor_units
from rails.ach.returns import AchNotificationOfChange, AchReturn, nacha_return_file_parse
from rails.models_ach import AchFileEntry
from rails.outcomes import settlement_report

APPLIED = "applied"
ALREADY_APPLIED = "already applied"
UNKNOWN = "unknown trace number"
# Change codes whose corrected data holds an account number: never stored or shown.
_ACCOUNT_CHANGES = frozenset({"C01", "C03", "C06", "C07"})


@dataclass(frozen=True)
class AchReturnOutcome:
    trace_number: str
    code: str  # R01... for a return, C01... for a notification of change
    reason: str
    status: str  # applied | already applied | unknown trace number
    invoice_number: str = ""
    settlement_state: str = ""

    @property
    def line(self) -> str:
        invoice = f" invoice {self.invoice_number}" if self.invoice_number else ""
        state = f" → settlement {self.settlement_state}" if self.settlement_state else ""
        return (
            f"{self.code} {self.reason}: trace {self.trace_number}{invoice}: {self.status}{state}"
        )


@dataclass(frozen=True)
class AchReturnsReport:
    file_name: str
    returns: tuple[AchReturnOutcome, ...]
    notifications_of_change: tuple[AchReturnOutcome, ...]

    def _count(self, status: str) -> int:
        return sum(1 for item in self.returns if item.status == status)

    @property
    def applied(self) -> int:
        return self._count(APPLIED)

    @property
    def already_applied(self) -> int:
        return self._count(ALREADY_APPLIED)

    @property
    def unknown(self) -> int:
        return self._count(UNKNOWN)

    @property
    def summary(self) -> str:
        return (
            f"{len(self.returns)} return(s): {self.applied} applied, {self.already_applied} "
            f"already applied, {self.unknown} with an unknown trace number; "
            f"{len(self.notifications_of_change)} notification(s) of change."
        )

    def lines(self) -> list[str]:
        return [
            self.summary,
            *(item.line for item in self.returns),
            *(item.line for item in self.notifications_of_change),
        ]


def _return_apply(
    item: AchReturn, *, now: datetime, file_name: str, actor: str
) -> AchReturnOutcome:
    entry = (
        AchFileEntry.objects.select_for_update(of=("self",))
        .select_related("settlement", "file")
        .filter(trace_number=item.original_trace_number)
        .first()
    )
    outcome = {
        "trace_number": item.original_trace_number,
        "code": item.return_code,
        "reason": item.reason,
    }
    if entry is None:
        return AchReturnOutcome(status=UNKNOWN, **outcome)
    if entry.returned_at is not None:
        return AchReturnOutcome(
            status=ALREADY_APPLIED,
            invoice_number=entry.invoice_number,
            settlement_state=entry.settlement.state,
            **outcome,
        )
    entry.returned_at = now
    entry.return_code = item.return_code
    entry.return_reason = item.reason[:300]
    entry.return_file_name = file_name[:255]
    entry.save(update_fields=["returned_at", "return_code", "return_reason", "return_file_name"])
    amount = from_minor_units(item.amount_minor, "USD")
    note = (
        f"ACH return {item.return_code} ({item.reason}) of trace {entry.trace_number} in file "
        f"{entry.file.file_name}: {amount:,} USD from account ending {item.account_last4}"
        + (f", in return file {file_name}" if file_name else "")
        + (f". Bank's note: {item.addenda_information}" if item.addenda_information else "")
        + (". NACHA allows re-presenting it (at most twice)." if item.retry_permitted else ".")
    )
    if item.amount_minor != entry.amount_minor:
        note += f" The returned amount differs from the {from_minor_units(entry.amount_minor, 'USD'):,} USD debited."
    settlement = settlement_report(
        settlement=entry.settlement, outcome="returned", now=now, actor=actor, note=note
    )
    return AchReturnOutcome(
        status=APPLIED,
        invoice_number=entry.invoice_number,
        settlement_state=settlement.state,
        **outcome,
    )


def _change_apply(item: AchNotificationOfChange, *, file_name: str) -> AchReturnOutcome:
    entry = (
        AchFileEntry.objects.select_for_update()
        .filter(trace_number=item.original_trace_number)
        .first()
    )
    outcome = {
        "trace_number": item.original_trace_number,
        "code": item.change_code,
        "reason": item.reason,
    }
    if entry is None:
        return AchReturnOutcome(status=UNKNOWN, **outcome)
    if entry.change_code == item.change_code:
        return AchReturnOutcome(
            status=ALREADY_APPLIED, invoice_number=entry.invoice_number, **outcome
        )
    corrected = (
        "the corrected account number is in the bank's file"
        if item.change_code in _ACCOUNT_CHANGES
        else f"corrected data: {item.corrected_data}"
    )
    entry.change_code = item.change_code
    entry.change_note = (
        f"{item.reason}; {corrected}; update the customer's bank details. {file_name}"[:300]
    )
    entry.save(update_fields=["change_code", "change_note"])
    return AchReturnOutcome(status=APPLIED, invoice_number=entry.invoice_number, **outcome)


def ach_returns_apply(
    *, content: str, now: datetime, file_name: str = "", actor: str = "ach return file"
) -> AchReturnsReport:
    """Apply a NACHA return file: every return fails its settlement and invoice.

    Raises rails.ach.returns.NachaParseError (a ValueError, naming the line) for a file
    that is not a well-formed return file; then nothing is applied.
    """
    parsed = nacha_return_file_parse(content)
    with transaction.atomic():
        returns = tuple(
            _return_apply(item, now=now, file_name=file_name, actor=actor)
            for item in parsed.returns
        )
        changes = tuple(
            _change_apply(item, file_name=file_name) for item in parsed.notifications_of_change
        )
    return AchReturnsReport(file_name=file_name, returns=returns, notifications_of_change=changes)
