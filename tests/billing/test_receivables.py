"""Receivables: the overdue rule's edges and the aging report's buckets, with the clock
passed explicitly (``now``), never today's date."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from billing.invoicing.receivables import (
    invoice_days_past_due,
    invoice_is_overdue,
    invoices_overdue,
    receivables_aging,
)
from billing.invoicing.services import credit_note_create, invoice_mark, invoice_void
from tests.factories import CustomerFactory, InvoiceFactory, IssuedInvoiceFactory

pytestmark = pytest.mark.django_db

SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)


def _overdue(invoice, now) -> bool:
    """The rule as one invoice and as the queryset answer it: they must agree."""
    one = invoice_is_overdue(invoice=invoice, now=now)
    many = invoices_overdue(now=now).filter(pk=invoice.pk).exists()
    assert one == many
    return one


def test_an_issued_invoice_is_overdue_only_after_its_due_instant():
    invoice = IssuedInvoiceFactory()
    assert not _overdue(invoice, invoice.due_at - SECOND)
    assert not _overdue(invoice, invoice.due_at)  # due exactly now: not yet late
    assert _overdue(invoice, invoice.due_at + SECOND)
    assert invoice_days_past_due(invoice=invoice, now=invoice.due_at + SECOND) == 1


def test_paid_void_uncollectible_and_draft_invoices_are_never_overdue():
    paid, void, bad = IssuedInvoiceFactory(), IssuedInvoiceFactory(), IssuedInvoiceFactory()
    later = paid.due_at + 10 * DAY
    invoice_mark(invoice=paid, status="paid", now=later, actor="t")
    invoice_void(invoice=void, reason="wrong", now=later, actor="t")
    invoice_mark(invoice=bad, status="uncollectible", now=later, actor="t")
    draft = InvoiceFactory()
    for invoice in (paid, void, bad, draft):
        invoice.refresh_from_db()
        assert not _overdue(invoice, later + 100 * DAY)


def test_a_failed_payment_stays_overdue():
    invoice = IssuedInvoiceFactory()
    invoice = invoice_mark(invoice=invoice, status="payment_failed", now=invoice.due_at, actor="t")
    assert _overdue(invoice, invoice.due_at + DAY)


def test_an_invoice_with_nothing_due_is_not_overdue():
    invoice = IssuedInvoiceFactory(lines=(("Free", "0"),))
    assert invoice.amount_due == 0
    assert not _overdue(invoice, invoice.due_at + 5 * DAY)


def test_a_partly_credited_invoice_is_overdue_for_what_is_left_and_a_fully_credited_one_is_not():
    part, whole = IssuedInvoiceFactory(lines=(("Work", "100.00"),)), IssuedInvoiceFactory()
    credit_note_create(invoice=part, reason="discount", amount=Decimal("30"), now=part.issued_at)
    credit_note_create(invoice=whole, reason="goodwill", now=whole.issued_at)
    now = part.due_at + 3 * DAY
    assert _overdue(part, now)
    assert not _overdue(whole, now)
    report = receivables_aging(now=now)
    (usd,) = report.currencies
    row = next(r for r in usd.rows if r.customer_key == part.customer.key)
    assert row.buckets["days_1_30"] == Decimal("70.00")
    assert whole.customer.key not in {r.customer_key for r in usd.rows}


@pytest.mark.parametrize(
    ("late", "bucket"),
    [
        (timedelta(0), "current"),
        (-DAY, "current"),
        (SECOND, "days_1_30"),
        (DAY, "days_1_30"),
        (30 * DAY, "days_1_30"),
        (30 * DAY + SECOND, "days_31_60"),
        (31 * DAY, "days_31_60"),
        (60 * DAY, "days_31_60"),
        (61 * DAY, "days_61_90"),
        (90 * DAY, "days_61_90"),
        (90 * DAY + SECOND, "over_90"),
        (91 * DAY, "over_90"),
    ],
)
def test_each_bucket_holds_its_days_past_due(late, bucket):
    invoice = IssuedInvoiceFactory(lines=(("Work", "12.34"),))
    (usd,) = receivables_aging(now=invoice.due_at + late).currencies
    (row,) = usd.rows
    assert row.buckets[bucket] == Decimal("12.34")
    assert row.total == Decimal("12.34")
    assert sum(1 for value in row.buckets.values() if value) == 1


def test_currencies_are_reported_apart_and_totalled_per_customer_and_overall():
    usd_a = CustomerFactory(key="acme")
    usd_b = CustomerFactory(key="bolt")
    eur = CustomerFactory(key="cafe", currency="EUR")
    first = IssuedInvoiceFactory(customer=usd_a, lines=(("A", "100.00"),))
    IssuedInvoiceFactory(customer=usd_a, lines=(("B", "50.00"),), now=first.issued_at + 40 * DAY)
    IssuedInvoiceFactory(customer=usd_b, lines=(("C", "7.50"),))
    IssuedInvoiceFactory(customer=eur, lines=(("D", "20.00"),))
    now = first.due_at + 45 * DAY  # the first 45 days late, the second 5, others 45

    report = receivables_aging(now=now)

    eur_table, usd_table = report.currencies
    assert [eur_table.currency, usd_table.currency] == ["EUR", "USD"]
    acme, bolt = usd_table.rows
    assert acme.customer_key == "acme"
    assert acme.buckets["days_31_60"] == Decimal("100.00")
    assert acme.buckets["days_1_30"] == Decimal("50.00")
    assert acme.total == Decimal("150.00")
    assert usd_table.totals["days_31_60"] == Decimal("107.50")
    assert usd_table.total == Decimal("157.50")
    assert eur_table.total == Decimal("20.00")
    assert receivables_aging(now=now, currency="eur").currencies[0].currency == "EUR"


def test_a_consolidated_invoice_ages_on_the_parent_that_it_bills():
    parent = CustomerFactory(key="globex")
    child = CustomerFactory(key="globex-eu", parent=parent)
    invoice = IssuedInvoiceFactory(customer=parent, line_customer=child, lines=(("EU", "80.00"),))

    (usd,) = receivables_aging(now=invoice.due_at + 2 * DAY).currencies

    assert [row.customer_key for row in usd.rows] == ["globex"]
    assert usd.rows[0].buckets["days_1_30"] == Decimal("80.00")
