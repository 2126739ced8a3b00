"""The settlement outbox and its state machine, with a third-party rail registered in
settings (no core code changes) and failure modes simulated by that rail."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from billing.invoicing.services import invoice_void
from billing.models import InvoiceStatus
from rails.journal import SettlementStateError
from rails.models import Settlement, SettlementState
from rails.outbox import settlement_drive, settlement_retry
from rails.outcomes import settlement_cancel, settlement_report
from rails.registry import rail_cache_clear
from tests.factories import CustomerFactory, IssuedInvoiceFactory, SettlementFactory
from tests.rails.pigeon import PigeonRail

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
RAILS = {
    "stripe": "rails.adapters.stripe.StripeRail",
    "netsuite": "rails.adapters.netsuite.NetSuiteRail",
    "ach": "rails.adapters.ach.AchRail",
    "manual": "rails.adapters.manual.ManualRail",
    "pigeon": "tests.rails.pigeon.PigeonRail",
}


@pytest.fixture(autouse=True)
def pigeon_rail():
    PigeonRail.calls, PigeonRail.script, PigeonRail.charges = [], [], {}
    with override_settings(BILLING_RAILS=RAILS):
        rail_cache_clear()
        yield
    rail_cache_clear()


def issued_invoice(*, rail="pigeon", parent=None, amount="120.50"):
    customer = CustomerFactory(rail=rail, parent=parent)
    return IssuedInvoiceFactory(
        customer=parent or customer,
        lines=(("Consulting", amount),),
        line_customer=customer,
        now=NOW,
    )


@pytest.mark.django_db
def test_issuing_opens_a_settlement_in_the_same_transaction():
    invoice = issued_invoice()
    settlement = Settlement.objects.get(invoice=invoice)
    assert (settlement.rail, settlement.state, settlement.attempts) == (
        "pigeon",
        SettlementState.PENDING,
        0,
    )
    assert [e.to_state for e in settlement.events.all()] == ["pending"]


@pytest.mark.django_db
def test_a_subsidiary_billed_to_its_parent_settles_on_the_parents_rail():
    parent = CustomerFactory(rail="pigeon")
    CustomerFactory(rail="manual", parent=parent)
    invoice = issued_invoice(rail="manual", parent=parent)
    assert Settlement.objects.get(invoice=invoice).rail == "pigeon"


@pytest.mark.django_db
def test_driving_submits_in_integer_minor_units_and_records_the_exchange_redacted():
    invoice = issued_invoice()
    settlement = Settlement.objects.get(invoice=invoice)
    assert settlement_drive(settlement_id=settlement.pk, now=NOW) == "submitted"
    settlement.refresh_from_db()
    assert PigeonRail.calls == [("submit", f"pigeon-{invoice.pk}-1-submit", 12050)]
    assert settlement.state == SettlementState.SUBMITTED and settlement.external_ids == {
        "charge": "ch_1"
    }
    exchange = settlement.exchanges.get()
    assert exchange.request_headers == {"Authorization": "[redacted]"}
    assert exchange.idempotency_key == f"pigeon-{invoice.pk}-1-submit"


@pytest.mark.django_db
def test_a_429_is_retried_later_with_backoff_and_a_new_attempt_key():
    invoice = issued_invoice()
    settlement = Settlement.objects.get(invoice=invoice)
    PigeonRail.script = ["429", "crash", "paid"]
    assert settlement_drive(settlement_id=settlement.pk, now=NOW) == "failed"
    settlement.refresh_from_db()
    assert (
        settlement.state == SettlementState.FAILED
        and settlement.next_action_at == NOW + timedelta(seconds=30)
    )
    assert (
        settlement_drive(settlement_id=settlement.pk, now=NOW + timedelta(seconds=10)) == "not due"
    )
    assert (
        settlement_drive(settlement_id=settlement.pk, now=NOW + timedelta(seconds=30)) == "failed"
    )  # refused connection
    settlement.refresh_from_db()
    assert "connection refused" in settlement.last_error
    assert settlement.next_action_at == NOW + timedelta(seconds=30) + timedelta(
        seconds=120
    )  # 60 s doubled
    assert settlement_drive(settlement_id=settlement.pk, now=NOW + timedelta(hours=1)) == "paid"
    assert [c[1] for c in PigeonRail.calls] == [
        f"pigeon-{invoice.pk}-{n}-submit" for n in (1, 2, 3)
    ]
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID and invoice.settlement_state == "paid"


@pytest.mark.django_db
def test_a_worker_that_dies_after_the_rails_answer_charges_nothing_twice():
    invoice = issued_invoice()
    settlement = Settlement.objects.get(invoice=invoice)
    # the worker claims the attempt and the rail charges, but the worker dies before recording it
    from rails.outbox import _claim

    claim = _claim(settlement.pk, NOW)
    from rails.base import Step
    from rails.rail_documents import invoice_document
    from rails.registry import rail_get

    rail_get("pigeon").submit(
        invoice=invoice_document(invoice),
        step=Step(
            settlement_id=settlement.pk,
            attempt=claim.attempt,
            name="submit",
            idempotency_key=f"pigeon-{invoice.pk}-{claim.attempt}-submit",
            now=NOW,
        ),
    )
    assert (
        settlement_drive(settlement_id=settlement.pk, now=NOW + timedelta(minutes=1)) == "not due"
    )  # leased
    assert (
        settlement_drive(settlement_id=settlement.pk, now=NOW + timedelta(minutes=6)) == "submitted"
    )
    assert len(PigeonRail.charges) == 1  # the same key: the rail found its earlier charge
    settlement.refresh_from_db()
    assert settlement.attempts == 1 and settlement.external_ids == {"charge": "ch_1"}


@pytest.mark.django_db
def test_states_never_move_backwards_on_late_or_replayed_reports():
    invoice = issued_invoice()
    settlement = Settlement.objects.get(invoice=invoice)
    settlement_drive(settlement_id=settlement.pk, now=NOW)
    settlement_report(settlement=settlement, outcome="paid", now=NOW, actor="webhook")
    settlement_report(
        settlement=settlement,
        outcome="failed",
        now=NOW,
        actor="webhook",
        note="late payment_failed",
    )
    settlement_report(settlement=settlement, outcome="paid", now=NOW, actor="webhook")
    settlement.refresh_from_db()
    invoice.refresh_from_db()
    assert settlement.state == SettlementState.PAID and invoice.status == InvoiceStatus.PAID
    settlement_report(settlement=settlement, outcome="refunded", now=NOW, actor="webhook")
    settlement.refresh_from_db()
    assert settlement.state == SettlementState.REFUNDED


@pytest.mark.django_db
def test_operators_retry_failed_and_cancel_pending_settlements():
    invoice = issued_invoice()
    settlement = Settlement.objects.get(invoice=invoice)
    with pytest.raises(SettlementStateError):
        settlement_retry(settlement=settlement, now=NOW, actor="ops")
    PigeonRail.script = ["429"]
    settlement_drive(settlement_id=settlement.pk, now=NOW)
    settlement_retry(settlement=settlement, now=NOW + timedelta(seconds=1), actor="ops")
    assert (
        settlement_drive(settlement_id=settlement.pk, now=NOW + timedelta(seconds=1)) == "submitted"
    )

    other = SettlementFactory(invoice=issued_invoice())
    cancelled = settlement_cancel(settlement=other, now=NOW, actor="ops", reason="Paid by cheque")
    assert cancelled.state == SettlementState.CANCELLED
    assert settlement_drive(settlement_id=other.pk, now=NOW + timedelta(days=1)) == "not due"


@pytest.mark.django_db
def test_voiding_the_invoice_voids_the_settlement(django_capture_on_commit_callbacks):
    invoice = issued_invoice()
    settlement = Settlement.objects.get(invoice=invoice)
    with django_capture_on_commit_callbacks(execute=True):
        invoice_void(invoice=invoice, reason="Wrong customer", now=NOW, actor="ops")
    settlement.refresh_from_db()
    assert settlement.state == SettlementState.VOIDED


@pytest.mark.django_db
def test_the_manual_rail_waits_for_an_operator():
    invoice = issued_invoice(rail="manual")
    settlement = Settlement.objects.get(invoice=invoice)
    assert settlement_drive(settlement_id=settlement.pk, now=NOW) == "submitted"
    from rails.outcomes import settlement_mark_paid

    settlement_mark_paid(settlement=settlement, now=NOW, actor="ops", note="Wire received")
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
