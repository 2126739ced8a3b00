"""Receivables: which issued invoices are still owed, which are overdue, and the aging
report of open balances by billing account. The one home of the overdue rule.

An invoice is **open** when it is issued and not settled (``issued`` or
``payment_failed``; never a draft, ``paid``, ``void`` or ``uncollectible``) and its
balance is above zero. Its **balance** is what the hosted page shows as still owed: the
amount due less payments and credit notes. It is **overdue** when it is open and its
``due_at`` lies before ``now`` (due exactly now is not yet overdue).

**Days past due** are counted in started days from the due instant: one second late is
day 1, exactly 30 days late is day 30, a second more is day 31. The count is elapsed
time, so it is the same in every time zone (UTC and the customer's billing zone agree;
``due_at`` is the issue instant plus the net terms, and the printed due date is that
instant's day in the customer's zone). The derived state is not stored: it changes with
the clock alone, and a stored flag would need a job to keep it true.

Nothing here reads the clock: every function takes ``now``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db.models import DecimalField, F, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from billing.invoicing.models import MONEY, CreditNote, Invoice, InvoiceStatus
from core.money import quantize

OPEN_STATUSES = (InvoiceStatus.ISSUED, InvoiceStatus.PAYMENT_FAILED)

# (key, label, first day past due, last day past due or None); "current" is not yet due.
BUCKETS = (
    ("current", "Current", None, 0),
    ("days_1_30", "1–30 days", 1, 30),
    ("days_31_60", "31–60 days", 31, 60),
    ("days_61_90", "61–90 days", 61, 90),
    ("over_90", "Over 90 days", 91, None),
)
BUCKET_KEYS = tuple(key for key, *_ in BUCKETS)


def _credited() -> Coalesce:
    total = (
        CreditNote.objects.filter(invoice=OuterRef("pk"))
        .order_by()
        .values("invoice")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    money = DecimalField(**MONEY)
    return Coalesce(Subquery(total, output_field=money), Value(Decimal(0)), output_field=money)


def invoices_with_credited(queryset: QuerySet[Invoice]) -> QuerySet[Invoice]:
    """``queryset`` annotated with ``credited_total`` (its credit notes' sum), which the
    one-invoice functions below read instead of querying each invoice's credit notes."""
    return queryset.annotate(credited_total=_credited())


def invoices_open(queryset: QuerySet[Invoice] | None = None) -> QuerySet[Invoice]:
    """Issued, unsettled invoices with a balance above zero, each annotated with
    ``open_balance`` (amount due less payments and credit notes)."""
    queryset = Invoice.objects.all() if queryset is None else queryset
    return (
        invoices_with_credited(queryset.filter(status__in=OPEN_STATUSES))
        .annotate(open_balance=_balance_expression())
        .filter(open_balance__gt=0)
    )


def _balance_expression():
    return F("amount_due") - F("amount_paid") - F("credited_total")


def invoices_overdue(
    *, now: datetime, queryset: QuerySet[Invoice] | None = None
) -> QuerySet[Invoice]:
    """Open invoices whose due instant is before ``now``."""
    return invoices_open(queryset).filter(due_at__lt=now)


def balance_left(*, invoice: Invoice, credited: Decimal) -> Decimal:
    """The amount due less payments and ``credited`` (its credit notes' sum), never below
    zero: the arithmetic of ``open_balance`` above, for one invoice."""
    return max(invoice.amount_due - invoice.amount_paid - credited, Decimal(0))


def invoice_balance(*, invoice: Invoice) -> Decimal:
    """What is still owed on one invoice (zero unless it is issued and unsettled)."""
    if invoice.status not in OPEN_STATUSES:
        return Decimal(0)
    credited = getattr(invoice, "credited_total", None)
    if credited is None:
        credited = sum((note.amount for note in invoice.credit_notes.all()), Decimal(0))
    return balance_left(invoice=invoice, credited=credited)


def days_past_due(*, due_at: datetime | None, now: datetime) -> int:
    """Started days since ``due_at``: 0 while not yet due (or without a due date)."""
    if due_at is None or due_at >= now:
        return 0
    return math.ceil((now - due_at).total_seconds() / 86400)


def invoice_days_past_due(*, invoice: Invoice, now: datetime) -> int:
    """How many (started) days an invoice is overdue; 0 when it is not overdue."""
    if invoice_balance(invoice=invoice) <= 0:
        return 0
    return days_past_due(due_at=invoice.due_at, now=now)


def invoice_is_overdue(*, invoice: Invoice, now: datetime) -> bool:
    """The overdue rule for one invoice: open, balance above zero, due before ``now``."""
    return invoice_days_past_due(invoice=invoice, now=now) > 0


def bucket_of(days: int) -> str:
    """The aging bucket of an invoice ``days`` past due (0: current)."""
    for key, _label, first, last in BUCKETS:
        if (first is None or days >= first) and (last is None or days <= last):
            return key
    raise AssertionError(days)  # the buckets cover every day count


# ---------------------------------------------------------------- the aging report


def _zeros() -> dict[str, Decimal]:
    return {key: Decimal(0) for key in BUCKET_KEYS}


@dataclass
class AgingRow:
    """One billing account's open balances in one currency."""

    customer_id: int
    customer_key: str
    customer_name: str
    buckets: dict[str, Decimal] = field(default_factory=_zeros)
    invoices: int = 0
    overdue_invoices: int = 0

    @property
    def total(self) -> Decimal:
        return sum(self.buckets.values(), Decimal(0))

    @property
    def overdue(self) -> Decimal:
        return self.total - self.buckets["current"]


@dataclass
class AgingCurrency:
    """The report's table for one currency: rows by customer key, and the totals."""

    currency: str
    rows: list[AgingRow]
    totals: dict[str, Decimal]

    @property
    def total(self) -> Decimal:
        return sum(self.totals.values(), Decimal(0))

    @property
    def overdue(self) -> Decimal:
        return self.total - self.totals["current"]


@dataclass(frozen=True)
class AgingReport:
    as_of: datetime
    currencies: list[AgingCurrency]


def receivables_aging(*, now: datetime, currency: str | None = None) -> AgingReport:
    """Open balances by billing account (the invoice's customer: a consolidated
    invoice counts on the parent it bills, never on its subsidiaries), per currency, in
    the buckets of ``BUCKETS`` as of ``now``. Currencies are never added together."""
    invoices = invoices_open().select_related("customer").order_by()
    if currency:
        invoices = invoices.filter(currency__iexact=currency)
    rows: dict[str, dict[int, AgingRow]] = defaultdict(dict)
    for invoice in invoices.only(
        "status", "currency", "due_at", "amount_due", "amount_paid", "customer__key",
        "customer__name",
    ):  # fmt: skip
        row = rows[invoice.currency].get(invoice.customer_id)
        if row is None:
            row = rows[invoice.currency][invoice.customer_id] = AgingRow(
                customer_id=invoice.customer_id,
                customer_key=invoice.customer.key,
                customer_name=invoice.customer.name,
            )
        days = days_past_due(due_at=invoice.due_at, now=now)
        row.buckets[bucket_of(days)] += invoice.open_balance
        row.invoices += 1
        row.overdue_invoices += days > 0
    tables = []
    for code in sorted(rows):
        ordered = sorted(rows[code].values(), key=lambda r: r.customer_key)
        for row in ordered:
            row.buckets = {k: quantize(v, code) for k, v in row.buckets.items()}
        totals = _zeros()
        for row in ordered:
            for key, value in row.buckets.items():
                totals[key] += value
        tables.append(AgingCurrency(currency=code, rows=ordered, totals=totals))
    return AgingReport(as_of=now, currencies=tables)
