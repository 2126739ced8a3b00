"""The invoice lifecycle: drafts at period end, recomputed during grace, issued with a
gapless number, then frozen; late usage billed on the next invoice; voids and credits.

Every state change locks the invoice row, checks its state, changes it and records an
``InvoiceEvent``, in one transaction. Services take ``now``; only the edges read the clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils.module_loading import import_string

from billing.models import (
    BillingProfile,
    CreditNote,
    CreditNoteLine,
    DocumentSequence,
    Invoice,
    InvoiceEvent,
    InvoiceLine,
    InvoiceStatus,
    InvoiceTax,
    LineKind,
    Subscription,
)
from billing.notifications import notify_invoice_status
from billing.periods import Period, period_containing
from billing.rating import RatedLine, rate_period, taxes_for, total_with_taxes
from core.money import quantize, zero
from customers.models import Customer
from customers.selectors import billed_customer_ids
from metering.usage import current_xmin, usage_changed_since


class InvoiceStateError(ValidationError):
    """The invoice is not in a state that allows the change."""


# ---------------------------------------------------------------- numbering


def sequence_next(*, prefix: str, year: int) -> str:
    """Take the next number of ``prefix`` for ``year`` (``INV-2026-000001``).

    Must run inside the transaction that uses the number: the row lock is held until it
    commits, and a rollback returns the number, so numbers are never skipped or reused.
    """
    key = f"{prefix}-{year}"
    DocumentSequence.objects.get_or_create(key=key)
    sequence = DocumentSequence.objects.select_for_update().get(key=key)
    number = sequence.next_number
    sequence.next_number = number + 1
    sequence.save(update_fields=["next_number"])
    return f"{key}-{number:06d}"


def _event(
    invoice: Invoice,
    *,
    at: datetime,
    from_status: str,
    to_status: str,
    actor: str = "",
    note: str = "",
) -> None:
    InvoiceEvent.objects.create(
        invoice=invoice, at=at, from_status=from_status, to_status=to_status, actor=actor, note=note
    )


# ---------------------------------------------------------------- rating a draft


def _grace(account: Customer) -> timedelta:
    profile = BillingProfile.objects.filter(customer=account).first()
    hours = (
        profile.grace_period_hours if profile and profile.grace_period_hours is not None else None
    )
    return timedelta(hours=settings.BILLING_GRACE_PERIOD_HOURS if hours is None else hours)


def _line(
    invoice: Invoice, position: int, rated: RatedLine, *, adjusts: Invoice | None = None
) -> InvoiceLine:
    return InvoiceLine(
        invoice=invoice,
        position=position,
        kind=rated.kind,
        description=rated.description[:500],
        feature_id=rated.feature_id,
        customer_id=rated.customer_id,
        period_start=rated.period_start,
        period_end=rated.period_end,
        quantity=rated.quantity,
        unit_price=rated.unit_price,
        amount=rated.amount,
        unrounded_amount=rated.unrounded_amount,
        group_quantity=rated.group_quantity,
        group_amount=rated.group_amount,
        tier_breakdown=list(rated.breakdown),
        rate_card_id=rated.rate_card_id,
        plan_version_id=rated.plan_version_id,
        adjusts_invoice=adjusts,
    )


def _issued_periods(account: Customer, before: datetime) -> list[Invoice]:
    lookback = timedelta(days=settings.BILLING_LATE_USAGE_LOOKBACK_DAYS)
    return list(
        Invoice.objects.filter(
            customer=account,
            period_start__isnull=False,
            period_end__lte=before,
            period_end__gt=before - lookback,
        )
        .exclude(status__in=[InvoiceStatus.DRAFT, InvoiceStatus.VOID])
        .order_by("period_start")
    )


def prior_period_adjustments(
    *, account: Customer, draft: Invoice
) -> list[tuple[RatedLine, Invoice]]:
    """Usage that arrived for issued periods after they were billed, as adjustment lines.

    For each issued period (within the lookback), if usage may have changed since the
    latest rating that billed it, the period's usage is rated again and each (feature,
    customer) difference from what was billed for it (the invoice plus earlier
    adjustments) becomes a line naming the original period.
    """
    customer_ids = billed_customer_ids(account=account)
    issued = _issued_periods(account, draft.period_start)
    if not issued:
        return []
    out: list[tuple[RatedLine, Invoice]] = []
    for invoice in issued:
        checked_at = (
            Invoice.objects.filter(customer=account, period_start__gte=invoice.period_start)
            .exclude(status=InvoiceStatus.DRAFT)
            .aggregate(x=Max("rated_xmin"))["x"]
        )
        if not usage_changed_since(
            customer_ids=customer_ids,
            start=invoice.period_start,
            end=invoice.period_end,
            xid=checked_at or 0,
        ):
            continue
        rerated = rate_period(
            account=account, period=Period(invoice.period_start, invoice.period_end)
        )
        billed: dict[tuple, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        billed_lines = InvoiceLine.objects.filter(
            Q(invoice=invoice, kind=LineKind.USAGE)
            | Q(
                adjusts_invoice=invoice,
                kind=LineKind.PRIOR_PERIOD_ADJUSTMENT,
                invoice__status__in=[
                    InvoiceStatus.ISSUED,
                    InvoiceStatus.PAID,
                    InvoiceStatus.PAYMENT_FAILED,
                    InvoiceStatus.UNCOLLECTIBLE,
                ],
            )
        )
        for line in billed_lines:
            key = (line.feature_id, line.customer_id, line.rate_card_id)
            billed[key][0] += line.quantity or 0
            billed[key][1] += line.amount
        now_lines: dict[tuple, list] = {}
        for line in rerated.lines:
            if line.kind == LineKind.USAGE:
                now_lines[(line.feature_id, line.customer_id, line.rate_card_id)] = line
        period_label = f"{invoice.period_start:%Y-%m-%d} – {invoice.period_end:%Y-%m-%d}"
        for key in sorted(set(billed) | set(now_lines), key=str):
            line = now_lines.get(key)
            quantity = (line.quantity if line else Decimal(0)) - billed[key][0]
            amount = (line.amount if line else Decimal(0)) - billed[key][1]
            if not quantity and not amount:
                continue
            feature_id, customer_id, rate_card_id = key
            name = line.description if line else "Usage"
            out.append(
                (
                    RatedLine(
                        kind=LineKind.PRIOR_PERIOD_ADJUSTMENT,
                        description=f"{name}: late usage for {period_label} (invoice {invoice.number})",
                        customer_id=customer_id,
                        period_start=invoice.period_start,
                        period_end=invoice.period_end,
                        amount=amount,
                        unrounded_amount=amount,
                        quantity=quantity,
                        feature_id=feature_id,
                        rate_card_id=rate_card_id,
                        plan_version_id=line.plan_version_id if line else None,
                    ),
                    invoice,
                )
            )
    return out


def _totals(invoice: Invoice, account: Customer, plan_version_ids: list[int]) -> None:
    currency = invoice.currency
    subtotal = sum((line.amount for line in invoice.lines.all()), zero(currency))
    taxes, exempt = taxes_for(account=account, plan_version_ids=plan_version_ids, subtotal=subtotal)
    InvoiceTax.objects.filter(invoice=invoice).delete()
    InvoiceTax.objects.bulk_create(
        InvoiceTax(
            invoice=invoice,
            name=t.name,
            percentage=t.percentage,
            inclusive=t.inclusive,
            base=t.base,
            amount=t.amount,
        )
        for t in taxes
    )
    invoice.subtotal = subtotal
    invoice.tax_total = sum((t.amount for t in taxes if not t.inclusive), zero(currency))
    invoice.tax_exempt_reason = exempt
    invoice.total = total_with_taxes(subtotal=subtotal, taxes=taxes, currency=currency)
    invoice.amount_due = max(invoice.total - invoice.credits_applied, zero(currency))


def invoice_rate(*, invoice: Invoice, now: datetime) -> Invoice:
    """Recompute a draft from current usage: rated lines and adjustments are replaced,
    manual lines kept. Raises ``InvoiceStateError`` unless the invoice is a draft."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().select_related("customer").get(pk=invoice.pk)
        if not invoice.is_draft:
            raise InvoiceStateError(f"{invoice} is {invoice.status}; only drafts are recomputed.")
        account = invoice.customer
        horizon = current_xmin()
        invoice.lines.filter(manual=False).delete()
        lines: list[InvoiceLine] = []
        versions: list[int] = []
        if invoice.period_start is not None:
            rated = rate_period(
                account=account, period=Period(invoice.period_start, invoice.period_end)
            )
            versions = list(rated.plan_versions)
            lines = [_line(invoice, i, line) for i, line in enumerate(rated.lines)]
            for rated_line, original in prior_period_adjustments(account=account, draft=invoice):
                lines.append(_line(invoice, len(lines), rated_line, adjusts=original))
        InvoiceLine.objects.bulk_create(lines)
        _totals(invoice, account, versions)
        invoice.rated_at = now
        invoice.rated_xmin = horizon
        invoice.save()
    return invoice


# ---------------------------------------------------------------- closing periods


def _ended_periods(sub: Subscription, account: Customer, now: datetime) -> Iterator[Period]:
    cadence = sub.plan_version.cadence
    period = period_containing(
        anchor=sub.anchor, cadence=cadence, timezone=account.timezone, instant=sub.start
    )
    last = min(now, sub.end) if sub.end else now
    while period.end <= now and period.start < last:
        yield period
        period = period_containing(
            anchor=sub.anchor, cadence=cadence, timezone=account.timezone, instant=period.end
        )


@dataclass(frozen=True)
class CloseResult:
    created: int
    existing: int


def invoice_draft_for(*, account: Customer, period: Period, now: datetime) -> tuple[Invoice, bool]:
    """The draft (or invoice) of ``account`` for ``period``, created and rated if missing.

    The unique constraint on (account, currency, period) makes two concurrent callers
    agree on one invoice.
    """
    existing = Invoice.objects.filter(
        customer=account,
        currency=account.currency,
        period_start=period.start,
        period_end=period.end,
    ).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            invoice = Invoice.objects.create(
                customer=account,
                currency=account.currency,
                period_start=period.start,
                period_end=period.end,
                grace_until=period.end + _grace(account),
            )
            _event(
                invoice,
                at=now,
                from_status="",
                to_status=InvoiceStatus.DRAFT,
                actor="billing run",
                note=f"Period {period.start:%Y-%m-%d} – {period.end:%Y-%m-%d} closed.",
            )
    except IntegrityError:
        return Invoice.objects.get(
            customer=account,
            currency=account.currency,
            period_start=period.start,
            period_end=period.end,
        ), False
    try:
        return invoice_rate(invoice=invoice, now=now), True
    except InvoiceStateError:  # another run issued it meanwhile: closed all the same
        return Invoice.objects.get(pk=invoice.pk), True


def periods_close(*, now: datetime) -> CloseResult:
    """Make a draft for every subscription period that has ended by ``now``."""
    created = existing = 0
    subs = Subscription.objects.select_related("plan_version", "customer").order_by(
        "customer_id", "start"
    )
    seen: set[tuple] = set()
    for sub in subs.iterator(chunk_size=500):
        for period in _ended_periods(sub, sub.customer, now):
            key = (sub.customer_id, period.start, period.end)
            if key in seen:
                continue
            seen.add(key)
            _, made = invoice_draft_for(account=sub.customer, period=period, now=now)
            created += made
            existing += not made
    return CloseResult(created=created, existing=existing)


def drafts_refresh(*, now: datetime) -> int:
    """Recompute drafts whose usage may have changed since they were rated."""
    refreshed = 0
    for invoice in Invoice.objects.filter(
        status=InvoiceStatus.DRAFT, period_start__isnull=False
    ).select_related("customer"):
        ids = billed_customer_ids(account=invoice.customer)
        earliest = _issued_periods(invoice.customer, invoice.period_start)
        start = earliest[0].period_start if earliest else invoice.period_start
        if usage_changed_since(
            customer_ids=ids, start=start, end=invoice.period_end, xid=invoice.rated_xmin
        ):
            try:
                invoice_rate(invoice=invoice, now=now)
            except InvoiceStateError:  # issued meanwhile by another run or an operator
                continue
            refreshed += 1
    return refreshed


# ---------------------------------------------------------------- issuing


def _hooks(setting: str):
    return [import_string(path) for path in getattr(settings, setting, [])]


def invoice_issue(*, invoice: Invoice, now: datetime, actor: str = "billing run") -> Invoice:
    """Issue a draft: rate it a last time, number it, set its due date, freeze it.

    Issue hooks (``BILLING_INVOICE_ISSUED_HOOKS``, e.g. the settlement outbox) run in the
    same transaction. Issuing an invoice that is no longer a draft raises
    ``InvoiceStateError``.
    """
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().select_related("customer").get(pk=invoice.pk)
        if not locked.is_draft:
            raise InvoiceStateError(f"{locked} is already {locked.status}.")
        locked = invoice_rate(invoice=locked, now=now)
        profile = BillingProfile.objects.filter(customer=locked.customer).first()
        net_terms = profile.net_terms_days if profile else settings.BILLING_NET_TERMS_DAYS
        locked.number = sequence_next(prefix=settings.BILLING_INVOICE_PREFIX, year=now.year)
        locked.status = InvoiceStatus.ISSUED
        locked.issued_at = now
        locked.due_at = now + timedelta(days=net_terms)
        for hook in _hooks("BILLING_INVOICE_ISSUING_HOOKS"):  # e.g. credits, before the freeze
            hook(invoice=locked, now=now)
        locked.amount_due = max(locked.total - locked.credits_applied, zero(locked.currency))
        Invoice.objects.filter(pk=locked.pk).update(
            number=locked.number,
            status=locked.status,
            issued_at=now,
            due_at=locked.due_at,
            credits_applied=locked.credits_applied,
            amount_due=locked.amount_due,
            updated_at=now,
        )
        _event(
            locked,
            at=now,
            from_status=InvoiceStatus.DRAFT,
            to_status=InvoiceStatus.ISSUED,
            actor=actor,
            note=f"Numbered {locked.number}, due {locked.due_at:%Y-%m-%d}.",
        )
        for hook in _hooks("BILLING_INVOICE_ISSUED_HOOKS"):
            hook(invoice=locked, now=now)
        transaction.on_commit(lambda: _enqueue_pdf(locked.pk))
    return locked


def _enqueue_pdf(invoice_id) -> None:
    from billing.tasks import invoice_pdf_render_task

    invoice_pdf_render_task.delay(invoice_id=str(invoice_id))


def invoices_issue_due(*, now: datetime) -> int:
    """Issue every draft whose grace period has ended by ``now``."""
    issued = 0
    due = Invoice.objects.filter(status=InvoiceStatus.DRAFT, grace_until__lte=now).values_list(
        "pk", flat=True
    )
    for pk in list(due):
        try:
            invoice_issue(invoice=Invoice(pk=pk), now=now)
            issued += 1
        except InvoiceStateError:  # issued meanwhile by another run or an operator
            continue
    return issued


def invoice_mark(
    *, invoice: Invoice, status: str, now: datetime, actor: str, note: str = ""
) -> Invoice:
    """Move an issued invoice's payment state (paid, payment_failed, uncollectible).

    Allowed: issued → paid | payment_failed | uncollectible; payment_failed → paid |
    uncollectible; an invoice never goes back to draft or issued. Repeating the current
    state is a no-op (webhooks and retries repeat themselves).
    """
    allowed = {
        InvoiceStatus.ISSUED: {
            InvoiceStatus.PAID,
            InvoiceStatus.PAYMENT_FAILED,
            InvoiceStatus.UNCOLLECTIBLE,
        },
        InvoiceStatus.PAYMENT_FAILED: {InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE},
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
        _totals(locked, locked.customer, versions)
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


__all__ = [
    "CloseResult",
    "InvoiceStateError",
    "credit_note_create",
    "drafts_refresh",
    "invoice_draft_for",
    "invoice_issue",
    "invoice_line_add",
    "invoice_mark",
    "invoice_rate",
    "invoice_void",
    "invoices_issue_due",
    "periods_close",
    "prior_period_adjustments",
    "sequence_next",
]
