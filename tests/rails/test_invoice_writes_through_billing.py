"""Rails never write billing's invoice table: a settlement's outcome reaches its invoice
through billing's services (``invoice_mark`` for the payment state,
``invoice_settlement_state_set`` for the settlement state it shows), which lock the
invoice and check its state."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import billing.invoicing.corrections as corrections
import rails.outbox
from billing.invoicing.services import InvoiceStateError, invoice_settlement_state_set
from billing.models import Invoice, InvoiceStatus
from rails.models import Settlement, SettlementState
from rails.outbox import settlement_drive
from rails.outcomes import settlement_cancel, settlement_report
from tests.factories import CustomerFactory
from tests.rails.test_settlement import NOW, issued_invoice, pigeon_rail  # noqa: F401

RAILS_DIR = Path(__file__).resolve().parents[2] / "rails"
BILLING_MODELS = {"Invoice", "InvoiceLine", "InvoiceEvent", "InvoiceTax", "CreditNote"}
WRITES = {"update", "create", "bulk_create", "bulk_update", "delete", "get_or_create"}
WRITES |= {"update_or_create", "save"}


def _direct_writes(path: Path) -> list[str]:
    """``<billing model>.objects…<write>(…)`` calls, and SQL naming an invoice table."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            chain, inner = [node.func.attr], node.func.value
            while isinstance(inner, ast.Call | ast.Attribute):
                if isinstance(inner, ast.Call):
                    inner = inner.func
                    continue
                chain.append(inner.attr)
                inner = inner.value
            named = isinstance(inner, ast.Name) and inner.id in BILLING_MODELS
            if named and "objects" in chain and node.func.attr in WRITES:
                found.append(f"{path.name}:{node.lineno}: {inner.id}.objects….{node.func.attr}()")
        sql = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if sql and re.search(
            r"\b(update|insert\s+into|delete\s+from)\s+billing_", node.value, re.I
        ):
            found.append(f"{path.name}:{node.lineno}: SQL writing a billing table")
    return found


def test_no_module_under_rails_writes_billings_invoice_tables():
    modules = [p for p in RAILS_DIR.rglob("*.py") if "migrations" not in p.parts]
    assert len(modules) > 10  # the walk found the rails package
    offenders = [line for path in modules for line in _direct_writes(path)]
    assert offenders == []


@pytest.fixture
def reports(monkeypatch):
    """Billing's settlement-state service replaced by a recorder that writes nothing: a
    state that still reaches the invoice was written behind billing's back."""
    seen: list[tuple[set, str]] = []

    def record(*, invoice_ids, state):
        seen.append(({str(pk) for pk in invoice_ids}, state))
        return len(seen[-1][0])

    monkeypatch.setattr(corrections, "invoices_settlement_state_set", record)
    monkeypatch.setattr(rails.outbox, "invoices_settlement_state_set", record)
    return seen


@pytest.mark.django_db
def test_every_settlement_outcome_reaches_the_invoice_through_billing(reports):
    invoice = issued_invoice()
    settlement = Settlement.objects.get(invoice=invoice)
    settlement_drive(settlement_id=settlement.pk, now=NOW)  # submitting, then submitted
    settlement_report(settlement=settlement, outcome="paid", now=NOW, actor="test")

    assert reports == [
        ({str(invoice.pk)}, SettlementState.PENDING),
        ({str(invoice.pk)}, SettlementState.SUBMITTING),
        ({str(invoice.pk)}, SettlementState.SUBMITTED),
        ({str(invoice.pk)}, SettlementState.PAID),
    ]
    invoice.refresh_from_db()
    assert invoice.settlement_state == ""  # nothing wrote it but the (replaced) service
    assert invoice.status == InvoiceStatus.PAID  # the payment state through invoice_mark


@pytest.mark.django_db
def test_a_cancelled_settlement_shows_on_its_invoice():
    invoice = issued_invoice()
    settlement = Settlement.objects.get(invoice=invoice)
    settlement_cancel(settlement=settlement, now=NOW, actor="test", reason="Paid by cheque.")
    invoice.refresh_from_db()
    assert invoice.settlement_state == SettlementState.CANCELLED


@pytest.mark.django_db
def test_billing_refuses_a_settlement_state_on_a_draft():
    draft = Invoice.objects.create(customer=CustomerFactory(), currency="USD")
    with pytest.raises(InvoiceStateError):
        invoice_settlement_state_set(invoice_id=draft.pk, state=SettlementState.PAID)
    draft.refresh_from_db()
    assert draft.settlement_state == ""
