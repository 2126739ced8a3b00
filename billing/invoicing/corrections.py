"""After issue: payment states, voids, manual lines on drafts and credit notes."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from billing.invoicing.base import InvoiceStateError, _event, _hooks, sequence_next
from billing.invoicing.recompute import _totals
from billing.models import (
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    InvoiceTax,
    LineKind,
)
from billing.notifications.services import notify_invoice_status
from core.money import quantize
from customers.models import Customer


def invoice_mark(
    *, invoice: Invoice, status: str, now: datetime, actor: str, note: str = ""
) -> Invoice:
    """Move an issued invoice's payment state (paid, payment_failed, uncollectible).

    Allowed: issued → paid | payment_failed | uncollectible; payment_failed → paid |
    uncollectible | issued (a retried payment its rail accepted: open again while it is
    collected); an invoice never goes back to draft. Repeating the current state is a
    no-op (webhooks and retries repeat themselves).
    """
    allowed = {
        InvoiceStatus.ISSUED: {
            InvoiceStatus.PAID,
            InvoiceStatus.PAYMENT_FAILED,
            InvoiceStatus.UNCOLLECTIBLE,
        },
        InvoiceStatus.PAYMENT_FAILED: {
            InvoiceStatus.PAID,
            InvoiceStatus.UNCOLLECTIBLE,
            InvoiceStatus.ISSUED,
        },
        InvoiceStatus.PAID: {InvoiceStatus.PAYMENT_FAILED},  # a returned ACH debit, a refund
    }
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status == status:
            return locked
        if status not in allowed.get(locked.status, set()):
            raise InvoiceStateError(f"{locked} is {locked.status}; it cannot become {status}.")
        before = locked.status
        locked.status = status
        fields = ["status", "updated_at"]
        if status == InvoiceStatus.PAID:
            locked.paid_at, locked.amount_paid = now, locked.amount_due
            fields += ["paid_at", "amount_paid"]
        locked.save(update_fields=fields)
        _event(locked, at=now, from_status=before, to_status=status, actor=actor, note=note)
        notify_invoice_status(invoice=locked, status=status, now=now)
    return locked


def invoices_settlement_state_set(*, invoice_ids: Collection, state: str) -> int:
    """Show the state of each invoice's settlement (its trip on its rail) on the invoice:
    the rail reports it here, and billing writes it. Returns how many invoices it wrote.

    Locks the invoices (in key order, so concurrent reports never deadlock), checks that
    each is issued (a draft has no settlement; a void or paid one keeps following its
    settlement, which may still be voided or returned on the rail) and that the state is
    a name the column can hold, then writes it. The trip itself is recorded on the
    settlement's own timeline; this column is its summary for the invoice list, so it
    writes no ``InvoiceEvent`` and no history row. Raises ``InvoiceStateError`` for a
    draft or a state it cannot store (nothing is written then).
    """
    if not state or len(state) > Invoice._meta.get_field("settlement_state").max_length:
        raise InvoiceStateError(f"{state!r} is not a settlement state.")
    ids = sorted(set(invoice_ids), key=str)
    with transaction.atomic():
        locked = list(
            Invoice.objects.select_for_update().filter(pk__in=ids).order_by("pk").only("status")
        )
        drafts = [invoice for invoice in locked if invoice.is_draft]
        if drafts:
            raise InvoiceStateError(f"{drafts[0]} is a draft: it has no settlement.")
        return Invoice.objects.filter(pk__in=[invoice.pk for invoice in locked]).update(
            settlement_state=state
        )


def invoice_settlement_state_set(*, invoice_id, state: str) -> int:
    """``invoices_settlement_state_set`` for one invoice."""
    return invoices_settlement_state_set(invoice_ids=[invoice_id], state=state)


def invoice_void(*, invoice: Invoice, reason: str, now: datetime, actor: str) -> Invoice:
    """Void an issued (unpaid) invoice; its number stays used. Hooks tell its rail."""
    if not reason.strip():
        raise ValidationError({"reason": "Say why the invoice is voided."})
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status not in (
            InvoiceStatus.ISSUED,
            InvoiceStatus.PAYMENT_FAILED,
            InvoiceStatus.UNCOLLECTIBLE,
        ):
            raise InvoiceStateError(
                f"{locked} is {locked.status}; only unpaid issued invoices can be voided."
            )
        before = locked.status
        locked.status, locked.voided_at, locked.void_reason = InvoiceStatus.VOID, now, reason
        locked.save(update_fields=["status", "voided_at", "void_reason", "updated_at"])
        _event(
            locked,
            at=now,
            from_status=before,
            to_status=InvoiceStatus.VOID,
            actor=actor,
            note=reason,
        )
        for hook in _hooks("BILLING_INVOICE_VOIDED_HOOKS"):
            hook(invoice=locked, now=now)
    return locked


def invoice_line_add(
    *,
    invoice: Invoice,
    description: str,
    amount: Decimal,
    now: datetime,
    quantity: Decimal | None = None,
    customer: Customer | None = None,
    user=None,
) -> InvoiceLine:
    """Add an operator's manual line to a draft; it survives recomputation."""
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().select_related("customer").get(pk=invoice.pk)
        if not locked.is_draft:
            raise InvoiceStateError(f"{locked} is issued; correct it with a credit note instead.")
        if not description.strip():
            raise ValidationError(
                {"description": "Describe the line as the customer will read it."}
            )
        rounded = quantize(amount, locked.currency)
        line = InvoiceLine.objects.create(
            invoice=locked,
            position=1000 + locked.lines.count(),
            kind=LineKind.MANUAL,
            description=description,
            customer=customer or locked.customer,
            quantity=quantity,
            amount=rounded,
            unrounded_amount=amount,
            manual=True,
            created_by=user,
            period_start=locked.period_start,
            period_end=locked.period_end,
        )
        versions = list(
            locked.lines.exclude(plan_version=None)
            .values_list("plan_version_id", flat=True)
            .distinct()
        )
        taxes = _totals(locked, locked.customer, list(locked.lines.all()), versions)
        InvoiceTax.objects.filter(invoice=locked).delete()
        InvoiceTax.objects.bulk_create(taxes)
        locked.save()
    return line


def credit_note_create(
    *,
    invoice: Invoice,
    reason: str,
    now: datetime,
    amount: Decimal | None = None,
    line_ids: list[int] | None = None,
    user=None,
) -> CreditNote:
    """Credit an issued invoice: the whole of it (no amount, no lines), some of its lines,
    or an amount. Never more than what is left to credit. Hooks send it to the rail."""
    if not reason.strip():
        raise ValidationError({"reason": "Say why the invoice is credited."})
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
            raise InvoiceStateError(
                f"{locked} is {locked.status}; only issued invoices can be credited."
            )
        credited = sum((c.amount for c in locked.credit_notes.all()), Decimal(0))
        remaining = locked.total - credited
        lines: list[tuple[InvoiceLine | None, str, Decimal]] = []
        if line_ids:
            chosen = list(locked.lines.filter(pk__in=line_ids))
            if len(chosen) != len(set(line_ids)):
                raise ValidationError({"lines": "Some lines are not on this invoice."})
            lines = [(line, f"Credit: {line.description}", line.amount) for line in chosen]
            if amount is not None:
                raise ValidationError({"amount": "Give lines or an amount, not both."})
        elif amount is not None:
            amount = quantize(amount, locked.currency)
            if amount <= 0:
                raise ValidationError({"amount": "A credit is a positive amount."})
            lines = [(None, f"Credit: {reason}", amount)]
        else:
            lines = [(None, f"Credit of invoice {locked.number}", remaining)]
        total = sum((line[2] for line in lines), Decimal(0))
        if total > remaining:
            raise ValidationError(
                {
                    "amount": f"Only {remaining} {locked.currency} of {locked.number} is left to credit."
                }
            )
        note = CreditNote.objects.create(
            number=sequence_next(prefix=settings.BILLING_CREDIT_NOTE_PREFIX, year=now.year),
            invoice=locked,
            currency=locked.currency,
            reason=reason,
            amount=total,
            issued_at=now,
            created_by=user,
        )
        CreditNoteLine.objects.bulk_create(
            CreditNoteLine(
                credit_note=note, invoice_line=line, description=text[:500], amount=value
            )
            for line, text, value in lines
        )
        _event(
            locked,
            at=now,
            from_status=locked.status,
            to_status=locked.status,
            actor=getattr(user, "username", "") or "operator",
            note=f"Credit note {note.number}: {total} ({reason})",
        )
        for hook in _hooks("BILLING_CREDIT_NOTE_HOOKS"):
            hook(credit_note=note, now=now)
    return note
