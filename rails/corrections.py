"""Billing's correction hooks: a voided invoice is voided on its rail too, and a credit
note is mirrored there; both after the billing transaction commits, each rail call outside
any transaction and its exchanges recorded on the settlement."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction

from billing.invoicing.services import invoice_settlement_state_set
from billing.models import CreditNote, Invoice
from rails.base import RailResult, Step
from rails.journal import event_add, exchanges_record, state_move
from rails.models import Settlement
from rails.models import SettlementState as S
from rails.outbox import idempotency_key
from rails.rail_documents import credit_note_document, invoice_document
from rails.registry import rail_get
from rails.states import can_move

logger = logging.getLogger(__name__)


def _step_call(settlement: Settlement, name: str, now: datetime, call) -> RailResult:
    step = Step(
        settlement_id=settlement.pk,
        attempt=settlement.attempts,
        name=name,
        idempotency_key=idempotency_key(
            settlement=settlement, attempt=settlement.attempts, step=name
        ),
        now=now,
        external_ids=dict(settlement.external_ids),
    )
    try:
        return call(step)
    except Exception as exc:
        logger.exception(
            "Rail %s failed on %s of settlement %s", settlement.rail, name, settlement.pk
        )
        return RailResult(outcome="failed", error=f"{type(exc).__name__}: {exc}")


def settlement_on_void(*, invoice: Invoice, now: datetime) -> None:
    """Billing's void hook: void on the rail too (after commit), and stop collecting."""
    settlement = Settlement.objects.filter(invoice=invoice).first()
    if settlement is None:
        return
    transaction.on_commit(lambda: _void_on_rail(settlement.pk, now))


def _void_on_rail(settlement_id: int, now: datetime) -> None:
    s = Settlement.objects.select_related("invoice__customer").get(pk=settlement_id)
    rail = rail_get(s.rail)
    result = _step_call(
        s,
        "void",
        now,
        lambda step: rail.void(invoice=invoice_document(s.invoice, rail=s.rail), step=step),
    )
    with transaction.atomic():
        s = Settlement.objects.select_for_update().get(pk=settlement_id)
        exchanges_record(s, result, s.attempts, now)
        if result.outcome == "failed":
            # e.g. an exported ACH debit cannot be recalled: keep tracking it (a return may follow)
            s.last_error = f"Void on the rail failed: {result.error}"
            event_add(
                s,
                at=now,
                from_state=s.state,
                to_state=s.state,
                actor="billing",
                note=f"Invoice voided, but the rail refused to void: {result.error}",
            )
        elif can_move(s.state, S.VOIDED):
            state_move(s, S.VOIDED, now=now, actor="billing", note=result.note or "Invoice voided.")
            s.next_action_at = None
        s.save()
        invoice_settlement_state_set(invoice_id=s.invoice_id, state=s.state)


def settlement_on_credit_note(*, credit_note: CreditNote, now: datetime) -> None:
    """Billing's credit-note hook: mirror the credit note on the rail (after commit)."""
    transaction.on_commit(lambda: _credit_on_rail(credit_note.pk, now))


def _credit_on_rail(credit_note_id, now: datetime) -> None:
    note = CreditNote.objects.select_related("invoice__customer").get(pk=credit_note_id)
    s = Settlement.objects.filter(invoice=note.invoice).first()
    if s is None:
        return
    rail = rail_get(s.rail)
    result = _step_call(
        s,
        f"credit-{note.number}",
        now,
        lambda step: rail.credit(
            credit_note=credit_note_document(note),
            invoice=invoice_document(note.invoice, rail=s.rail),
            step=step,
        ),
    )
    with transaction.atomic():
        s = Settlement.objects.select_for_update().get(pk=s.pk)
        exchanges_record(s, result, s.attempts, now)
        s.external_ids = {**s.external_ids, **result.external_ids}
        event_add(
            s,
            at=now,
            from_state=s.state,
            to_state=s.state,
            actor="billing",
            note=f"Credit note {note.number}: {'failed: ' + result.error if result.outcome == 'failed' else 'sent'}.",
        )
        s.save()
