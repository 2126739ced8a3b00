"""The invoice lifecycle: drafts at period end, issue, numbering, freezing, late usage."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from billing.catalog.periods import Period
from billing.catalog.services import RateCardSpec
from billing.invoicing.services import (
    InvoiceStateError,
    credit_note_create,
    invoice_draft_for,
    invoice_issue,
    invoice_line_add,
    invoice_rate,
    invoice_void,
    periods_close,
    sequence_next,
    sequence_take,
)
from billing.models import FrozenInvoiceError, Invoice, InvoiceLine, InvoiceStatus, LineKind
from metering.services import usage_rollup
from tests.factories import (
    ConsumerMappingFactory,
    CustomerFactory,
    FeatureFactory,
    PlanVersionFactory,
    SubscriptionFactory,
)
from tests.metering.conftest import cloud_event

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def account(db):
    acme = CustomerFactory(key="acme")
    SubscriptionFactory(customer=acme, plan_version__feature=FeatureFactory(), start=OCT)
    ConsumerMappingFactory(consumer_key="acme-gw", customer=acme, valid_from=OCT)
    return acme


def calls(ingest, n, start, prefix="e"):
    ingest(
        *[
            cloud_event(
                f"{prefix}-{start.isoformat()}-{i}",
                subject="acme-gw",
                time=(start + timedelta(minutes=i)).isoformat(),
            )
            for i in range(n)
        ]
    )


@pytest.mark.django_db
def test_sequences_are_gapless_and_per_prefix_and_year():
    assert [sequence_next(prefix="INV", year=2026) for _ in range(3)] == [
        "INV-2026-000001",
        "INV-2026-000002",
        "INV-2026-000003",
    ]
    assert sequence_next(prefix="INV", year=2027) == "INV-2027-000001"
    assert sequence_next(prefix="CN", year=2026) == "CN-2026-000001"
    with pytest.raises(RuntimeError), transaction.atomic():
        sequence_next(prefix="INV", year=2026)
        raise RuntimeError("the issuing transaction fails")
    assert (
        sequence_next(prefix="INV", year=2026) == "INV-2026-000004"
    )  # the rolled-back number is reused


@pytest.mark.django_db
def test_a_billing_run_takes_a_chunks_numbers_at_once_in_order_and_returns_them_on_rollback():
    assert sequence_take(prefix="INV", year=2026, count=3) == [
        "INV-2026-000001",
        "INV-2026-000002",
        "INV-2026-000003",
    ]
    with pytest.raises(RuntimeError), transaction.atomic():
        sequence_take(prefix="INV", year=2026, count=200)
        raise RuntimeError("the chunk's transaction fails")
    assert sequence_take(prefix="INV", year=2026, count=2) == ["INV-2026-000004", "INV-2026-000005"]
    assert sequence_next(prefix="INV", year=2026) == "INV-2026-000006"


@pytest.mark.django_db(transaction=True)
def test_recomputing_a_draft_rewrites_its_lines_only_when_they_changed(account, ingest):
    calls(ingest, 3, OCT + timedelta(days=3))
    usage_rollup(now=NOV)
    draft, _ = invoice_draft_for(account=account, period=Period(OCT, NOV), now=NOV)
    before = list(draft.lines.values_list("pk", "quantity", "amount"))
    assert [(q, a) for _, q, a in before] == [(1, Decimal("49.00")), (3, Decimal("0.03"))]

    invoice_rate(invoice=draft, now=NOV + timedelta(hours=1))  # nothing changed
    assert list(draft.lines.values_list("pk", "quantity", "amount")) == before
    draft.refresh_from_db()
    assert draft.rated_at == NOV + timedelta(hours=1)  # rated all the same

    calls(ingest, 2, OCT + timedelta(days=4), prefix="late")
    invoice_rate(invoice=draft, now=NOV + timedelta(hours=2))
    after = list(draft.lines.values_list("pk", "quantity", "amount"))
    assert [(q, a) for _, q, a in after] == [(1, Decimal("49.00")), (5, Decimal("0.05"))]
    assert not {pk for pk, _, _ in after} & {pk for pk, _, _ in before}  # rewritten
    draft.refresh_from_db()
    assert draft.total == Decimal("49.05")


@pytest.mark.django_db
def test_ended_periods_become_drafts_once(account):
    result = periods_close(now=NOV + timedelta(hours=1))
    assert result.created == 1
    assert periods_close(now=NOV + timedelta(hours=2)).created == 0
    draft = Invoice.objects.get()
    assert (draft.status, draft.number, draft.period_start, draft.period_end) == (
        InvoiceStatus.DRAFT,
        None,
        OCT,
        NOV,
    )
    assert draft.grace_until == NOV + timedelta(hours=24)
    assert draft.total == Decimal("49.00")
    # its timeline reads the period as the invoice shows it: the last day inclusive
    assert draft.events.get().note == "Period Oct\u00a01 – Oct\u00a031,\u00a02026 closed."
    with pytest.raises(IntegrityError), transaction.atomic():
        Invoice.objects.create(customer=account, currency="USD", period_start=OCT, period_end=NOV)


@pytest.mark.django_db
def test_issuing_numbers_freezes_and_sets_the_due_date(account):
    draft, _ = invoice_draft_for(account=account, period=Period(OCT, NOV), now=NOV)
    invoice_line_add(
        invoice=draft, description="Onboarding workshop", amount=Decimal("500"), now=NOV
    )
    issued = invoice_issue(invoice=draft, now=NOV + timedelta(days=1))
    issued.refresh_from_db()
    assert issued.number == f"INV-{NOV.year}-000001"
    assert issued.status == InvoiceStatus.ISSUED
    assert issued.due_at == NOV + timedelta(days=31)
    assert issued.total == Decimal("549.00")
    assert [e.to_status for e in issued.events.all()] == ["draft", "issued"]
    with pytest.raises(InvoiceStateError):
        invoice_issue(invoice=issued, now=NOV + timedelta(days=2))


@pytest.mark.django_db
def test_an_issued_invoice_refuses_every_change(account):
    draft, _ = invoice_draft_for(account=account, period=Period(OCT, NOV), now=NOV)
    invoice = invoice_issue(invoice=draft, now=NOV)
    invoice.refresh_from_db()
    line = invoice.lines.first()

    invoice.total = Decimal("1.00")
    with pytest.raises(FrozenInvoiceError):
        invoice.save()
    with pytest.raises(FrozenInvoiceError):
        line.amount = Decimal("0")
        line.save()
    with pytest.raises(FrozenInvoiceError):
        line.delete()
    with pytest.raises(FrozenInvoiceError):
        InvoiceLine(
            invoice=invoice,
            kind=LineKind.MANUAL,
            description="x",
            customer=account,
            amount=1,
            unrounded_amount=1,
        ).save()
    with pytest.raises(FrozenInvoiceError):
        invoice.delete()
    # and below the models, the database itself
    for statement in (
        lambda: Invoice.objects.filter(pk=invoice.pk).update(total=Decimal("1.00")),
        lambda: Invoice.objects.filter(pk=invoice.pk).update(number="INV-X"),
        lambda: Invoice.objects.filter(pk=invoice.pk).update(status="draft"),
        lambda: InvoiceLine.objects.filter(invoice=invoice).update(amount=0),
        lambda: InvoiceLine.objects.filter(invoice=invoice).delete(),
        lambda: connection.cursor().execute(
            "DELETE FROM billing_invoice WHERE id = %s", [invoice.pk]
        ),
    ):
        with pytest.raises(IntegrityError, match="invoice_frozen"), transaction.atomic():
            statement()
    fresh = Invoice.objects.get(pk=invoice.pk)
    assert (fresh.total, fresh.number, fresh.lines.count()) == (Decimal("49.00"), invoice.number, 2)
    with pytest.raises(InvoiceStateError):
        invoice_line_add(invoice=invoice, description="late fee", amount=Decimal(5), now=NOV)


@pytest.mark.django_db
def test_void_and_credit_notes(account):
    draft, _ = invoice_draft_for(account=account, period=Period(OCT, NOV), now=NOV)
    invoice = invoice_issue(invoice=draft, now=NOV)
    note = credit_note_create(invoice=invoice, reason="Goodwill", amount=Decimal("9.999"), now=NOV)
    assert (note.number, note.amount) == (f"CN-{NOV.year}-000001", Decimal("10.00"))
    with pytest.raises(Exception, match="left to credit"):
        credit_note_create(invoice=invoice, reason="Too much", amount=Decimal("40"), now=NOV)
    whole = credit_note_create(invoice=invoice, reason="Billing error", now=NOV)
    assert whole.amount == Decimal("39.00") and whole.number == f"CN-{NOV.year}-000002"
    voided = invoice_void(invoice=invoice, reason="Reissued", now=NOV, actor="ops")
    assert voided.status == InvoiceStatus.VOID and voided.number == invoice.number
    with pytest.raises(InvoiceStateError):
        invoice_void(invoice=invoice, reason="again", now=NOV, actor="ops")


@pytest.mark.django_db(transaction=True)
def test_late_usage_lands_on_the_next_invoice_and_the_issued_one_stays(account, ingest):
    calls(ingest, 10, OCT + timedelta(days=3))
    usage_rollup(now=NOV)
    draft, _ = invoice_draft_for(account=account, period=Period(OCT, NOV), now=NOV)
    october = invoice_issue(invoice=draft, now=NOV + timedelta(days=1))
    assert october.total == Decimal("49.10")

    calls(ingest, 4, OCT + timedelta(days=20), prefix="late")  # October usage arriving in November
    calls(ingest, 3, NOV + timedelta(days=2))
    usage_rollup(now=DEC)
    periods_close(now=DEC)
    november = Invoice.objects.get(period_start=NOV)
    adjustments = november.lines.filter(kind=LineKind.PRIOR_PERIOD_ADJUSTMENT)
    assert [(a.quantity, a.amount, a.adjusts_invoice_id) for a in adjustments] == [
        (4, Decimal("0.04"), october.pk)
    ]
    assert (
        "2026-10-01" in adjustments[0].description and october.number in adjustments[0].description
    )
    assert november.total == Decimal("49.00") + Decimal("0.03") + Decimal("0.04")
    october.refresh_from_db()
    assert (
        october.total == Decimal("49.10") and october.lines.get(kind=LineKind.USAGE).quantity == 10
    )

    # issued with the adjustment, the late usage is billed exactly once
    invoice_issue(invoice=november, now=DEC + timedelta(days=1))
    calls(ingest, 1, DEC + timedelta(days=1))
    usage_rollup(now=DEC + timedelta(days=32))
    periods_close(now=datetime(2027, 1, 1, tzinfo=UTC))
    december = Invoice.objects.get(period_start=DEC)
    assert not december.lines.filter(kind=LineKind.PRIOR_PERIOD_ADJUSTMENT).exists()


@pytest.mark.django_db
def test_a_period_without_usage_bills_the_first_tiers_flat_fee():
    # Stripe, OpenMeter and Lago charge a tiered price's first flat fee at zero usage;
    # a subscription with no usage at all gets it on its invoice, explained on the PDF.
    from billing.documents.pdf import invoice_html

    initech = CustomerFactory(key="initech")
    tiers = [
        {"up_to": 1000, "unit_price": "0.01", "flat_price": "25.00"},
        {"up_to": None, "unit_price": "0.005"},
    ]
    graduated = RateCardSpec(
        key="calls",
        feature=FeatureFactory(),
        price={"model": "graduated", "tiers": tiers, "included": 500},
    )
    tiered = PlanVersionFactory(key="tiered", name="Tiered", rate_cards=(graduated,))
    SubscriptionFactory(customer=initech, plan_version=tiered, start=OCT)

    periods_close(now=NOV + timedelta(hours=1))

    draft = Invoice.objects.get(customer=initech)
    (usage,) = draft.lines.all()
    assert (usage.kind, usage.quantity, usage.amount) == (LineKind.USAGE, 0, Decimal("25.00"))
    assert draft.total == Decimal("25.00")
    html = invoice_html(invoice=draft, for_pdf=False)
    assert "Tier 1: no usage" in html and "$25.00 flat fee" in html
