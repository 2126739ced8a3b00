"""Settlement: the outbox that takes each issued invoice to its rail.

Driving a settlement has three phases so no rail call happens inside a database
transaction: claim it (lock, check, move to ``submitting``, commit), call the rail with a
deterministic idempotency key, then record the answer (lock, check, move, commit:
``rails.outcomes.settlement_apply_result``). A worker that dies between the rail's answer
and the record leaves the settlement in ``submitting``; after a lease it is driven again
with the same attempt number and so the same key, and the rail answers with its earlier
result instead of charging again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q

from billing.invoicing.services import (
    invoice_settlement_state_set,
    invoices_settlement_state_set,
)
from billing.models import Invoice
from customers.models import Customer, rail_label
from customers.selectors import billing_account_ids
from rails.base import RailResult, Step
from rails.journal import SettlementStateError, event_add, state_move
from rails.models import Settlement, SettlementEvent
from rails.models import SettlementState as S
from rails.outcomes import settlement_apply_result
from rails.rail_documents import invoice_document
from rails.registry import rail_get

logger = logging.getLogger(__name__)


def idempotency_key(*, settlement: Settlement, attempt: int, step: str) -> str:
    """Deterministic per rail, invoice, attempt and step (never random)."""
    return f"{settlement.rail}-{settlement.invoice_id}-{attempt}-{step}"


# ------------------------------------------------------------------ opening (billing hook)


def settlement_open_for_invoice(*, invoice: Invoice, now: datetime) -> Settlement:
    """Billing's issue hook: open the invoice's settlement in the issuing transaction,
    on the billing account's rail (a subsidiary billed to its parent uses the parent's)."""
    return settlement_open_for_invoices(invoices=[invoice], now=now)[0]


def settlement_open_for_invoices(*, invoices: list[Invoice], now: datetime) -> list[Settlement]:
    """``settlement_open_for_invoice`` for many invoices at once (a billing run's chunk)."""
    account_of = billing_account_ids(customer_ids={i.customer_id for i in invoices})
    rail_of = dict(
        Customer.objects.filter(pk__in=set(account_of.values())).values_list("pk", "rail")
    )
    sandbox = {rail: rail_get(rail).is_sandbox() for rail in set(rail_of.values())}
    settlements = Settlement.objects.bulk_create(
        Settlement(
            invoice=invoice,
            rail=rail_of[account_of[invoice.customer_id]],
            state=S.PENDING,
            sandbox=sandbox[rail_of[account_of[invoice.customer_id]]],
            created_at=now,
            next_action_at=now,
        )
        for invoice in invoices
    )
    SettlementEvent.objects.bulk_create(
        SettlementEvent(
            settlement=settlement,
            at=now,
            from_state="",
            to_state=S.PENDING,
            actor="billing",
            note=f"Opened on {rail_label(settlement.rail)}"
            f"{' (sandbox: nothing will be sent)' if settlement.sandbox else ''}.",
        )
        for settlement in settlements
    )
    invoices_settlement_state_set(invoice_ids=[i.pk for i in invoices], state=S.PENDING)
    ids = [settlement.pk for settlement in settlements]
    transaction.on_commit(lambda: _enqueue_many(ids))
    return settlements


settlement_open_for_invoice.many = settlement_open_for_invoices


# Settlements per drive task when many open at once (a billing run's chunk).
SETTLEMENTS_PER_TASK = 10
# rails.tasks, which calls this module: its tasks are sent by name, not imported (the app's
# ready() registers them in every process).
SETTLEMENT_DRIVE_TASK = "rails.settlement_drive"
SETTLEMENTS_DRIVE_TASK = "rails.settlements_drive"


def _enqueue(settlement_id: int) -> None:
    _enqueue_many([settlement_id])


def _enqueue_many(settlement_ids: list[int]) -> None:
    """Drive these settlements from a worker: one task for one, else one task per
    ``SETTLEMENTS_PER_TASK``, all sent over one broker connection."""
    settlement_drive_task = current_app.tasks[SETTLEMENT_DRIVE_TASK]
    settlements_drive_task = current_app.tasks[SETTLEMENTS_DRIVE_TASK]
    if len(settlement_ids) == 1:
        settlement_drive_task.delay(settlement_id=settlement_ids[0])
        return
    with settlements_drive_task.app.producer_or_acquire() as producer:
        for i in range(0, len(settlement_ids), SETTLEMENTS_PER_TASK):
            settlements_drive_task.apply_async(
                kwargs={"settlement_ids": settlement_ids[i : i + SETTLEMENTS_PER_TASK]},
                producer=producer,
            )


# ------------------------------------------------------------------ driving


@dataclass(frozen=True)
class _Claim:
    settlement_id: int
    action: str  # submit | check
    attempt: int
    rail: str
    external_ids: dict


def _claim(settlement_id: int, now: datetime) -> _Claim | None:
    lease = timedelta(seconds=settings.RAILS_SUBMIT_LEASE_SECONDS)
    with transaction.atomic():
        s = Settlement.objects.select_for_update(skip_locked=True).filter(pk=settlement_id).first()
        if s is None or (s.next_action_at and s.next_action_at > now) or s.next_action_at is None:
            return None
        if s.state in (S.PENDING, S.FAILED):
            s.attempts += 1
            state_move(s, S.SUBMITTING, now=now, actor="worker", note=f"Attempt {s.attempts}.")
            action = "submit"
        elif s.state == S.SUBMITTING:
            # A worker died mid-attempt: the same attempt again, with the same keys.
            event_add(
                s,
                at=now,
                from_state=s.state,
                to_state=s.state,
                actor="worker",
                note=f"Attempt {s.attempts} resumed after an interruption (same idempotency keys).",
            )
            action = "submit"
        elif s.state in (S.SUBMITTED, S.COLLECTING):
            action = "check"
        else:
            return None
        s.next_action_at = now + lease
        s.save(update_fields=["state", "attempts", "next_action_at", "updated_at"])
        invoice_settlement_state_set(invoice_id=s.invoice_id, state=s.state)
        return _Claim(s.pk, action, s.attempts, s.rail, dict(s.external_ids))


def settlement_drive(*, settlement_id: int, now: datetime) -> str:
    """Take one due step of a settlement (submit or check). Returns what happened."""
    claim = _claim(settlement_id, now)
    if claim is None:
        return "not due"
    s = Settlement.objects.select_related("invoice__customer").get(pk=claim.settlement_id)
    rail = rail_get(claim.rail)
    step = Step(
        settlement_id=s.pk,
        attempt=claim.attempt,
        name=claim.action,
        idempotency_key=idempotency_key(settlement=s, attempt=claim.attempt, step=claim.action),
        now=now,
        external_ids=claim.external_ids,
    )
    document = invoice_document(s.invoice, rail=s.rail)
    try:
        result = (
            rail.submit(invoice=document, step=step)
            if claim.action == "submit"
            else rail.check(invoice=document, step=step)
        )
    except Exception as exc:  # an adapter bug or a network error it did not catch: retry later
        logger.exception("Rail %s failed on settlement %s", claim.rail, s.pk)
        result = RailResult(outcome="failed", error=f"{type(exc).__name__}: {exc}", retryable=True)
    settlement_apply_result(settlement_id=s.pk, result=result, attempt=claim.attempt, now=now)
    return result.outcome


def settlements_drive_due(*, now: datetime, limit: int = 500) -> dict:
    """Drive every settlement that has a step due by ``now`` (the billing run's hook)."""
    due = list(
        Settlement.objects.filter(next_action_at__lte=now)
        .filter(Q(state__in=[S.PENDING, S.FAILED, S.SUBMITTING, S.SUBMITTED, S.COLLECTING]))
        .order_by("next_action_at")
        .values_list("pk", flat=True)[:limit]
    )
    outcomes: dict[str, int] = {}
    for pk in due:
        outcome = settlement_drive(settlement_id=pk, now=now)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


# ------------------------------------------------------------------ operators


def settlement_retry(*, settlement: Settlement, now: datetime, actor: str) -> Settlement:
    """Retry a failed settlement now, as a new attempt."""
    with transaction.atomic():
        s = Settlement.objects.select_for_update().get(pk=settlement.pk)
        if s.state != S.FAILED:
            raise SettlementStateError(
                f"Only failed settlements can be retried; this one is {s.state}."
            )
        s.next_action_at = now
        s.save(update_fields=["next_action_at", "updated_at"])
        event_add(
            s, at=now, from_state=s.state, to_state=s.state, actor=actor, note="Retry requested."
        )
    transaction.on_commit(lambda: _enqueue(s.pk))
    return s
