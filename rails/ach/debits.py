"""What an ACH export debits: which settlements are due, how much is left to collect on
each, and each one's debit, checked on its own so one bad entry cannot stop the file."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date, datetime

from django.db.models import DateField, QuerySet, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from billing.models import InvoiceStatus
from core.money import from_minor_units, to_minor_units
from rails.ach.calendar import next_banking_day
from rails.ach.nacha import AchDebit, AchOriginator, nacha_file_build
from rails.ach.nacha_records import ALLOWED_TEXT_CHARACTERS
from rails.adapters.ach import (
    ach_account_number,
    ach_bank_details,
    ach_business_date,
    ach_is_sandbox,
)
from rails.models import Settlement
from rails.models import SettlementState as S


@dataclass(frozen=True)
class DueDebit:
    """One settlement's debit, checked, with what the export records beside it."""

    settlement: Settlement
    debit: AchDebit
    account_last4: str


def nacha_text(value: str) -> str:
    """Names as a NACHA file can carry them: accents dropped, other characters spaced."""
    ascii_text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    return "".join(ch if ch.upper() in ALLOWED_TEXT_CHARACTERS else " " for ch in ascii_text)


def ach_due(*, effective: date, sandbox: bool) -> QuerySet[Settlement]:
    """The ACH settlements due in a file debiting on ``effective`` (see ``rails.ach.export``)."""
    return (
        Settlement.objects.select_related("invoice__customer")
        .filter(rail="ach", state=S.SUBMITTED, sandbox=sandbox)
        .exclude(external_ids__has_key="ach_trace_number")
        .exclude(invoice__status=InvoiceStatus.VOID)
        .annotate(debit_date=Cast(KT("external_ids__ach_effective_date"), DateField()))
        .filter(debit_date__lte=effective)
        .order_by("debit_date", "invoice__number")
    )


def ach_due_locked(*, effective: date, sandbox: bool) -> list[Settlement]:
    """The due settlements, locked; ones another export or worker holds are skipped."""
    return list(
        ach_due(effective=effective, sandbox=sandbox).select_for_update(
            skip_locked=True, of=("self",)
        )
    )


@dataclass(frozen=True)
class AchExportPreview:
    effective_date: date
    count: int
    total_debit_minor: int
    sandbox: bool

    @property
    def total_debit_display(self) -> str:
        return f"${from_minor_units(self.total_debit_minor, 'USD'):,}"


def ach_export_preview(*, now: datetime) -> AchExportPreview:
    """What an export at `now` would debit (before checking each customer's details)."""
    effective = next_banking_day(ach_business_date(now))
    sandbox = ach_is_sandbox()
    due = list(ach_due(effective=effective, sandbox=sandbox))
    return AchExportPreview(
        effective_date=effective,
        count=len(due),
        total_debit_minor=sum(ach_debit_amount_minor(settlement) for settlement in due),
        sandbox=sandbox,
    )


def ach_debit_amount_minor(settlement: Settlement) -> int:
    """What is left to collect: the amount due less credit notes issued before export."""
    invoice = settlement.invoice
    credited = invoice.credit_notes.aggregate(total=Sum("amount"))["total"] or 0
    return to_minor_units(max(invoice.amount_due - credited, 0), invoice.currency)


def ach_debit_for(
    settlement: Settlement, *, originator: AchOriginator, now: datetime, effective: date
) -> DueDebit | None:
    """The settlement's debit, checked on its own so one bad entry cannot stop the file;
    None when nothing is left to debit.

    Raises ValidationError or ValueError saying why it cannot be debited.
    """
    invoice = settlement.invoice
    customer = invoice.customer
    amount = ach_debit_amount_minor(settlement)
    if amount <= 0:
        return None
    details = ach_bank_details(customer.rail_settings)
    debit = AchDebit(
        invoice_number=invoice.number,
        amount_minor=amount,
        receiver_name=nacha_text(details.account_holder_name or customer.name),
        receiver_id=nacha_text(customer.key),
        routing_number=details.routing_number,
        account_number=ach_account_number(customer.rail_settings),
        account_type=details.account_type,
        sec_code=details.sec_code,
    )
    nacha_file_build(
        originator=originator,
        debits=[debit],
        created_at=now,
        effective_date=effective,
        file_id_modifier="A",
    )
    return DueDebit(settlement=settlement, debit=debit, account_last4=details.account_last4)
