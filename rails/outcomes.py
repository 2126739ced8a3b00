"""What a settlement becomes: a rail's answer recorded, a payment result the rail
reports later (a webhook, a return file), an operator's decision; and the invoice's payment
state following the settlement's.

Rails never write billing's tables: an invoice's payment state moves through
``billing.invoicing.corrections.invoice_mark`` and the settlement state it shows through
``billing.invoicing.invoice_settlement_state_set``, each locking and checking the invoice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from billing.invoicing.services import (
    InvoiceStateError,
    invoice_mark,
    invoice_settlement_state_set,
)
from billing.models import InvoiceStatus
from billing.notifications.services import notify_settlement_failed
from rails.base import RailResult
from rails.journal import event_add, exchanges_record, state_move
from rails.models import Settlement
from rails.models import SettlementState as S
from rails.states import RANK, can_move

logger = logging.getLogger(__name__)


def _backoff(attempts: int) -> timedelta:
    base = settings.RAILS_RETRY_BASE_SECONDS
    return timedelta(
        seconds=min(base * 2 ** max(attempts - 1, 0), settings.RAILS_RETRY_MAX_SECONDS)
    )


def _next_check(result: RailResult, now: datetime) -> datetime | None:
    """When to ask the rail again about a submitted settlement: when it says, never for a
    rail that waits for an operator (nothing would answer), else after the poll interval."""
    if result.awaits_operator:
        return None
    return result.next_check_at or now + timedelta(seconds=settings.RAILS_POLL_SECONDS)


def _invoice_follow(s: Settlement, now: datetime, actor: str, note: str = "") -> None:
    """Bring the invoice's payment state in line with the settlement's: the one place a
    settlement's state is mapped onto its invoice's."""
    invoice = s.invoice
    target = {
        S.PAID: InvoiceStatus.PAID,
        S.RETURNED: InvoiceStatus.PAYMENT_FAILED,
        S.UNCOLLECTIBLE: InvoiceStatus.UNCOLLECTIBLE,
    }.get(s.state)
    if s.state == S.FAILED and (s.next_action_at is None):
        target = InvoiceStatus.PAYMENT_FAILED
    if s.state in (S.SUBMITTED, S.COLLECTING) and invoice.status == InvoiceStatus.PAYMENT_FAILED:
        # A retry the rail accepted: payment is under way again, so the invoice is open
        # (issued), not failed, while the rail collects.
        target = InvoiceStatus.ISSUED
    if target and invoice.status not in (InvoiceStatus.VOID,):
        try:
            invoice_mark(invoice=invoice, status=target, now=now, actor=actor, note=note)
        except InvoiceStateError as exc:
            logger.warning("Invoice %s not moved to %s: %s", invoice.pk, target, exc)
    invoice_settlement_state_set(invoice_id=invoice.pk, state=s.state)


def settlement_apply_result(
    *, settlement_id: int, result: RailResult, attempt: int, now: datetime, actor: str = "worker"
) -> Settlement:
    """Record a rail's answer: exchanges, external ids, the new state, the invoice's state."""
    with transaction.atomic():
        s = Settlement.objects.select_for_update().select_related("invoice").get(pk=settlement_id)
        exchanges_record(s, result, attempt, now)
        s.external_ids = {**s.external_ids, **result.external_ids}
        s.sandbox = s.sandbox or result.sandbox
        outcome = result.outcome
        if outcome == "failed":
            s.last_error = result.error
            exhausted = not result.retryable or s.attempts >= settings.RAILS_MAX_ATTEMPTS
            if s.state in (S.SUBMITTING, S.SUBMITTED, S.COLLECTING):
                state_move(s, S.FAILED, now=now, actor=actor, note=result.error)
            if exhausted:
                s.next_action_at = None
                notify_settlement_failed(settlement=s, now=now)
            else:
                delay = (
                    timedelta(seconds=result.retry_after_seconds)
                    if result.retry_after_seconds
                    else _backoff(s.attempts)
                )
                s.next_action_at = now + delay
        elif outcome == "pending":  # nothing new; ask again later
            s.next_action_at = _next_check(result, now)
            if s.state == S.SUBMITTING:
                state_move(s, S.SUBMITTED, now=now, actor=actor, note=result.note)
        else:
            target = {
                "submitted": S.SUBMITTED,
                "collecting": S.COLLECTING,
                "paid": S.PAID,
                "voided": S.VOIDED,
                "uncollectible": S.UNCOLLECTIBLE,
                "refunded": S.REFUNDED,
                "returned": S.RETURNED,
            }[outcome]
            if RANK[target] >= RANK[s.state] and can_move(s.state, target):
                state_move(s, target, now=now, actor=actor, note=result.note)
            s.last_error = ""
            polling = target in (S.SUBMITTED, S.COLLECTING)
            s.next_action_at = _next_check(result, now) if polling else None
        s.save()
        _invoice_follow(s, now, actor, result.error or result.note)
    return s


def settlement_report(
    *,
    settlement: Settlement,
    outcome: str,
    now: datetime,
    actor: str,
    note: str = "",
    external_ids: dict | None = None,
) -> Settlement:
    """A payment result reported by the rail (a webhook, a return file): applied only if
    it moves the settlement forward, so replayed or out-of-order reports change nothing."""
    result = RailResult(
        outcome=outcome,
        external_ids=external_ids or {},
        note=note,
        error=note if outcome == "failed" else "",
        retryable=False,
    )
    with transaction.atomic():
        s = Settlement.objects.select_for_update().get(pk=settlement.pk)
        target = {
            "paid": S.PAID,
            "failed": S.FAILED,
            "voided": S.VOIDED,
            "uncollectible": S.UNCOLLECTIBLE,
            "refunded": S.REFUNDED,
            "returned": S.RETURNED,
            "collecting": S.COLLECTING,
        }[outcome]
        if (
            s.state == target
            or not can_move(s.state, target)
            or (RANK[target] < RANK[s.state] and target != S.FAILED)
        ):
            event_add(
                s,
                at=now,
                from_state=s.state,
                to_state=s.state,
                actor=actor,
                note=f"Ignored report '{outcome}': the settlement is already {s.state}. {note}",
            )
            return s
        return settlement_apply_result(
            settlement_id=s.pk, result=result, attempt=s.attempts, now=now, actor=actor
        )


# ------------------------------------------------------------------ operators


def settlement_cancel(
    *, settlement: Settlement, now: datetime, actor: str, reason: str
) -> Settlement:
    """Stop a pending or failed settlement (the invoice is settled some other way)."""
    if not reason.strip():
        raise ValidationError({"reason": "Say why the settlement is cancelled."})
    with transaction.atomic():
        s = Settlement.objects.select_for_update().get(pk=settlement.pk)
        state_move(s, S.CANCELLED, now=now, actor=actor, note=reason)
        s.next_action_at = None
        s.save(update_fields=["state", "next_action_at", "updated_at"])
        invoice_settlement_state_set(invoice_id=s.invoice_id, state=s.state)
    return s


def settlement_mark_paid(
    *, settlement: Settlement, now: datetime, actor: str, note: str = ""
) -> Settlement:
    """An operator records a payment received outside any rail (the manual rail)."""
    return settlement_report(
        settlement=settlement, outcome="paid", now=now, actor=actor, note=note or "Marked paid."
    )
