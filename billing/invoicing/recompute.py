"""Rating a draft: its lines from the account's usage and plan (and late usage of issued
periods), its taxes and totals, compared with what is stored and rewritten only when they
changed."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Q

from billing.catalog.periods import Period
from billing.catalog.rating import (
    RatedLine,
    RatedPeriod,
    amount_due,
    rate_period,
    totals_compute,
)
from billing.catalog.rating_context import RatingContext
from billing.invoicing.base import InvoiceStateError, _history, _invoices_update
from billing.models import (
    BillingProfile,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    InvoiceTax,
    LineKind,
)
from customers.models import Customer
from metering.usage import current_xmin, usage_changed_since

# ---------------------------------------------------------------- rating a draft


@dataclass
class _Context:
    """A billing run's context for a chunk of accounts: what rating reads besides usage,
    and each account's invoices that are no longer drafts (for late usage)."""

    rating: RatingContext
    billed: dict[int, list[Invoice]]

    @classmethod
    def load(cls, account_ids, *, since: datetime | None = None) -> _Context:
        """``since``: the earliest draft period start the context serves (only invoices
        within the late-usage lookback before it matter)."""
        ids = sorted(set(account_ids))
        billed: dict[int, list[Invoice]] = {}
        invoices = Invoice.objects.filter(customer_id__in=ids, period_start__isnull=False)
        if since is not None:
            lookback = timedelta(days=settings.BILLING_LATE_USAGE_LOOKBACK_DAYS)
            invoices = invoices.filter(period_end__gt=since - lookback)
        for invoice in invoices.exclude(
            status__in=[InvoiceStatus.DRAFT, InvoiceStatus.VOID]
        ).order_by("customer_id", "period_start"):
            billed.setdefault(invoice.customer_id, []).append(invoice)
        return cls(rating=RatingContext.load(ids), billed=billed)

    @classmethod
    def for_invoices(cls, invoices: list[Invoice]) -> _Context:
        starts = [i.period_start for i in invoices if i.period_start is not None]
        return cls.load({i.customer_id for i in invoices}, since=min(starts, default=None))

    def profile(self, account_id: int) -> BillingProfile | None:
        return self.rating.profiles.get(account_id)


def _grace(account: Customer, context: _Context) -> timedelta:
    profile = context.profile(account.pk)
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


def _issued_periods(account: Customer, before: datetime, context: _Context) -> list[Invoice]:
    lookback = timedelta(days=settings.BILLING_LATE_USAGE_LOOKBACK_DAYS)
    return [
        invoice
        for invoice in context.billed.get(account.pk, [])
        if before - lookback < invoice.period_end <= before
    ]


# A usage line's identity across ratings: (feature id, customer id, rate card id).
_UsageKey = tuple[int | None, int, int | None]

# The states of an adjustment's invoice that count as billed.
_BILLED_STATES = [
    InvoiceStatus.ISSUED,
    InvoiceStatus.PAID,
    InvoiceStatus.PAYMENT_FAILED,
    InvoiceStatus.UNCOLLECTIBLE,
]


def _usage_changed_since_billed(
    *, account: Customer, invoice: Invoice, customer_ids: list[int]
) -> bool:
    """Whether usage of ``invoice``'s period may have changed since the latest rating
    that billed it (that invoice's or a later one's)."""
    checked_at = (
        Invoice.objects.filter(customer=account, period_start__gte=invoice.period_start)
        .exclude(status=InvoiceStatus.DRAFT)
        .aggregate(x=Max("rated_xmin"))["x"]
    )
    return usage_changed_since(
        customer_ids=customer_ids,
        start=invoice.period_start,
        end=invoice.period_end,
        xid=checked_at or 0,
    )


def _billed_usage(invoice: Invoice) -> dict[_UsageKey, list[Decimal]]:
    """What was billed for ``invoice``'s usage, per usage line: ``[quantity, amount]`` of
    the invoice's own lines plus the adjustments to it already billed."""
    billed: dict[_UsageKey, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    billed_lines = InvoiceLine.objects.filter(
        Q(invoice=invoice, kind=LineKind.USAGE)
        | Q(
            adjusts_invoice=invoice,
            kind=LineKind.PRIOR_PERIOD_ADJUSTMENT,
            invoice__status__in=_BILLED_STATES,
        )
    )
    for line in billed_lines:
        key = (line.feature_id, line.customer_id, line.rate_card_id)
        billed[key][0] += line.quantity or 0
        billed[key][1] += line.amount
    return billed


def _adjustment_lines(
    *, invoice: Invoice, billed: dict[_UsageKey, list[Decimal]], rerated: RatedPeriod
) -> list[tuple[RatedLine, Invoice]]:
    """One line per usage line whose quantity or amount now differs from what was
    billed for ``invoice``'s period: the difference, naming the original period."""
    now_lines: dict[_UsageKey, RatedLine] = {}
    for line in rerated.lines:
        if line.kind == LineKind.USAGE:
            now_lines[(line.feature_id, line.customer_id, line.rate_card_id)] = line
    period_label = f"{invoice.period_start:%Y-%m-%d} – {invoice.period_end:%Y-%m-%d}"
    out: list[tuple[RatedLine, Invoice]] = []
    for key in sorted(set(billed) | set(now_lines), key=str):
        line = now_lines.get(key)
        quantity = (line.quantity if line else Decimal(0)) - billed[key][0]
        amount = (line.amount if line else Decimal(0)) - billed[key][1]
        if not quantity and not amount:
            continue
        feature_id, customer_id, rate_card_id = key
        name = line.description if line else "Usage"
        adjustment = RatedLine(
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
        )
        out.append((adjustment, invoice))
    return out


def prior_period_adjustments(
    *, account: Customer, draft: Invoice, context: _Context | None = None
) -> list[tuple[RatedLine, Invoice]]:
    """Usage that arrived for issued periods after they were billed, as adjustment lines.

    For each issued period (within the lookback), if usage may have changed since the
    latest rating that billed it, the period's usage is rated again and each (feature,
    customer) difference from what was billed for it (the invoice plus earlier
    adjustments) becomes a line naming the original period.
    """
    context = context or _Context.load([account.pk])
    issued = _issued_periods(account, draft.period_start, context)
    if not issued:
        return []
    customer_ids = context.rating.billed[account.pk]
    out: list[tuple[RatedLine, Invoice]] = []
    for invoice in issued:
        if not _usage_changed_since_billed(
            account=account, invoice=invoice, customer_ids=customer_ids
        ):
            continue
        rerated = rate_period(
            account=account,
            period=Period(invoice.period_start, invoice.period_end),
            context=context.rating,
        )
        out += _adjustment_lines(invoice=invoice, billed=_billed_usage(invoice), rerated=rerated)
    return out


def _rated_lines(
    invoice: Invoice, account: Customer, context: _Context
) -> tuple[list[InvoiceLine], list[int]]:
    """The computed lines of a draft (usage, fees, late usage) and its plan versions."""
    if invoice.period_start is None:
        return [], []
    rated = rate_period(
        account=account,
        period=Period(invoice.period_start, invoice.period_end),
        context=context.rating,
    )
    lines = [_line(invoice, i, line) for i, line in enumerate(rated.lines)]
    for rated_line, original in prior_period_adjustments(
        account=account, draft=invoice, context=context
    ):
        lines.append(_line(invoice, len(lines), rated_line, adjusts=original))
    return lines, list(rated.plan_versions)


def _totals(
    invoice: Invoice,
    account: Customer,
    lines: list[InvoiceLine],
    plan_version_ids: list[int],
    context: _Context | None = None,
) -> list[InvoiceTax]:
    """Set the invoice's totals from all its ``lines``; its taxes (unsaved)."""
    totals = totals_compute(
        account=account,
        currency=invoice.currency,
        amounts=[line.amount for line in lines],
        plan_version_ids=plan_version_ids,
        context=context.rating if context else None,
    )
    invoice.subtotal = totals.subtotal
    invoice.tax_total = totals.tax_total
    invoice.tax_exempt_reason = totals.tax_exempt_reason
    invoice.total = totals.total
    invoice.amount_due = amount_due(
        total=invoice.total, credits_applied=invoice.credits_applied, currency=invoice.currency
    )
    taxes = totals.taxes
    return [
        InvoiceTax(
            invoice=invoice,
            name=t.name,
            percentage=t.percentage,
            inclusive=t.inclusive,
            base=t.base,
            amount=t.amount,
        )
        for t in taxes
    ]


_LINE_FIELDS = [
    f
    for f in InvoiceLine._meta.concrete_fields
    if f.name not in ("id", "invoice", "manual", "created_by")
]
_TAX_FIELDS = [f for f in InvoiceTax._meta.concrete_fields if f.name not in ("id", "invoice")]
_TOTAL_FIELDS = ["subtotal", "tax_total", "total", "amount_due", "tax_exempt_reason"]


def _as_stored(obj, fields) -> tuple:
    """The row as the database keeps it (decimals at their column's scale), to compare a
    fresh rating with what is stored."""
    values = []
    for f in fields:
        value = getattr(obj, f.attname)
        if isinstance(value, Decimal) and f.get_internal_type() == "DecimalField":
            value = value.quantize(Decimal(1).scaleb(-f.decimal_places))
        values.append(value)
    return tuple(values)


def _same(old: list, new: list, fields) -> bool:
    return [_as_stored(o, fields) for o in old] == [_as_stored(n, fields) for n in new]


@dataclass
class _Rating:
    """A draft rated again: what to write if it differs from what is stored."""

    invoice: Invoice
    lines: list[InvoiceLine]
    taxes: list[InvoiceTax]
    lines_changed: bool
    taxes_changed: bool
    totals_changed: bool


def _rate(
    invoice: Invoice,
    context: _Context,
    stored_lines: list[InvoiceLine],
    stored_taxes: list[InvoiceTax],
) -> _Rating:
    """Rate ``invoice`` (a draft) again and compare with its stored lines and taxes;
    sets its totals. Nothing is written."""
    account = invoice.customer
    manual = [line for line in stored_lines if line.manual]
    lines, versions = _rated_lines(invoice, account, context)
    before = _as_stored(invoice, [Invoice._meta.get_field(n) for n in _TOTAL_FIELDS])
    taxes = _totals(invoice, account, lines + manual, versions, context)
    after = _as_stored(invoice, [Invoice._meta.get_field(n) for n in _TOTAL_FIELDS])
    return _Rating(
        invoice=invoice,
        lines=lines,
        taxes=taxes,
        lines_changed=not _same([x for x in stored_lines if not x.manual], lines, _LINE_FIELDS),
        taxes_changed=not _same(stored_taxes, taxes, _TAX_FIELDS),
        totals_changed=before != after,
    )


def _ratings_write(ratings: list[_Rating], *, horizon: int, now: datetime) -> None:
    """Store what changed in each rating (lines, taxes, totals) and stamp every invoice
    as rated at ``now`` with usage below ``horizon`` in it."""
    relined = [r.invoice.pk for r in ratings if r.lines_changed]
    retaxed = [r.invoice.pk for r in ratings if r.taxes_changed]
    with connection.cursor() as cursor:
        if relined:  # computed lines only; no credit note refers to a draft's lines
            cursor.execute(
                "DELETE FROM billing_invoiceline WHERE invoice_id = ANY(%s) AND NOT manual",
                [relined],
            )
        if retaxed:
            cursor.execute("DELETE FROM billing_invoicetax WHERE invoice_id = ANY(%s)", [retaxed])
    InvoiceLine.objects.bulk_create([x for r in ratings if r.lines_changed for x in r.lines])
    InvoiceTax.objects.bulk_create([t for r in ratings if r.taxes_changed for t in r.taxes])
    for r in ratings:
        r.invoice.rated_at, r.invoice.rated_xmin, r.invoice.updated_at = now, horizon, now
    _invoices_update(
        [r.invoice for r in ratings], ["rated_at", "rated_xmin", "updated_at", *_TOTAL_FIELDS]
    )
    changed = [r.invoice for r in ratings if r.totals_changed]
    if changed:
        _history(changed, first=False, reason="recomputed")


def _stored(invoice_ids: list) -> tuple[dict, dict]:
    lines: dict = defaultdict(list)
    taxes: dict = defaultdict(list)
    for line in InvoiceLine.objects.filter(invoice_id__in=invoice_ids).order_by("position", "pk"):
        lines[line.invoice_id].append(line)
    for tax in InvoiceTax.objects.filter(invoice_id__in=invoice_ids).order_by("pk"):
        taxes[tax.invoice_id].append(tax)
    return lines, taxes


def _drafts_rate(drafts: list[Invoice], *, now: datetime, context: _Context) -> None:
    """Rate locked drafts again from current usage; rated lines and adjustments are
    replaced where they changed, manual lines kept."""
    horizon = current_xmin()
    lines, taxes = _stored([d.pk for d in drafts])
    context.rating.usage_prefetch(
        (d.customer, Period(d.period_start, d.period_end))
        for d in drafts
        if d.period_start is not None
    )
    ratings = [_rate(d, context, lines[d.pk], taxes[d.pk]) for d in drafts]
    _ratings_write(ratings, horizon=horizon, now=now)


def invoice_rate(*, invoice: Invoice, now: datetime) -> Invoice:
    """Recompute a draft from current usage: rated lines and adjustments are replaced,
    manual lines kept. Raises ``InvoiceStateError`` unless the invoice is a draft."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().select_related("customer").get(pk=invoice.pk)
        if not invoice.is_draft:
            raise InvoiceStateError(f"{invoice} is {invoice.status}; only drafts are recomputed.")
        _drafts_rate([invoice], now=now, context=_Context.for_invoices([invoice]))
    return invoice
