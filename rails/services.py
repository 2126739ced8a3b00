"""Settlement: the outbox that takes each issued invoice to its rail and brings the
payment result back to billing.

Rails never write billing's tables: an invoice's payment state moves through
``billing.invoicing.invoice_mark`` and the settlement state it shows through
``billing.invoicing.invoice_settlement_state_set``, each locking and checking the invoice.

Driving a settlement has three phases so no rail call happens inside a database
transaction: claim it (lock, check, move to ``submitting``, commit), call the rail with a
deterministic idempotency key, then record the answer (lock, check, move, commit). A
worker that dies between the rail's answer and the record leaves the settlement in
``submitting``; after a lease it is driven again with the same attempt number and so the
same key, and the rail answers with its earlier result instead of charging again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from billing.invoicing.services import (
    InvoiceStateError,
    invoice_mark,
    invoice_settlement_state_set,
    invoices_settlement_state_set,
)
from billing.models import CreditNote, Invoice, InvoiceStatus
from billing.notifications.services import notify_settlement_failed
from customers.models import Customer, rail_label
from customers.selectors import billing_account_ids
from rails.base import RailResult, Step, redact
from rails.models import Settlement, SettlementEvent, SettlementExchange
from rails.models import SettlementState as S
from rails.rail_documents import credit_note_document, invoice_document
from rails.registry import rail_get
from rails.states import RANK, can_move

logger = logging.getLogger(__name__)


class SettlementStateError(ValidationError):
    pass


def idempotency_key(*, settlement: Settlement, attempt: int, step: str) -> str:
    """Deterministic per rail, invoice, attempt and step (never random)."""
    return f"{settlement.rail}-{settlement.invoice_id}-{attempt}-{step}"


def _event(
    settlement: Settlement,
    *,
    at: datetime,
    from_state: str,
    to_state: str,
    actor: str,
    note: str = "",
) -> None:
    SettlementEvent.objects.create(
        settlement=settlement,
        at=at,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        note=note[:5000],
    )


def _move(
    settlement: Settlement, to_state: str, *, now: datetime, actor: str, note: str = ""
) -> bool:
    if settlement.state == to_state:
        return False
    if not can_move(settlement.state, to_state):
        raise SettlementStateError(f"A {settlement.state} settlement cannot become {to_state}.")
    before = settlement.state
    settlement.state = to_state
    _event(settlement, at=now, from_state=before, to_state=to_state, actor=actor, note=note)
    return True


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


def _enqueue(settlement_id: int) -> None:
    _enqueue_many([settlement_id])


def _enqueue_many(settlement_ids: list[int]) -> None:
    from rails.tasks import settlement_drive_task, settlements_drive_task

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


def _backoff(attempts: int) -> timedelta:
    base = settings.RAILS_RETRY_BASE_SECONDS
    return timedelta(
        seconds=min(base * 2 ** max(attempts - 1, 0), settings.RAILS_RETRY_MAX_SECONDS)
    )


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
            _move(s, S.SUBMITTING, now=now, actor="worker", note=f"Attempt {s.attempts}.")
            action = "submit"
        elif s.state == S.SUBMITTING:
            # A worker died mid-attempt: the same attempt again, with the same keys.
            _event(
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


def _record_exchanges(s: Settlement, result: RailResult, attempt: int, now: datetime) -> None:
    SettlementExchange.objects.bulk_create(
        SettlementExchange(
            settlement=s,
            attempt=attempt,
            step=e.step,
            idempotency_key=e.idempotency_key,
            method=e.method,
            url=e.url,
            request_headers=redact(e.request_headers),
            request_body=e.request_body,
            status_code=e.status_code,
            response_body=e.response_body[:100_000],
            error=e.error,
            sent=e.sent,
            at=now,
        )
        for e in result.exchanges
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
        _record_exchanges(s, result, attempt, now)
        s.external_ids = {**s.external_ids, **result.external_ids}
        s.sandbox = s.sandbox or result.sandbox
        outcome = result.outcome
        if outcome == "failed":
            s.last_error = result.error
            exhausted = not result.retryable or s.attempts >= settings.RAILS_MAX_ATTEMPTS
            if s.state in (S.SUBMITTING, S.SUBMITTED, S.COLLECTING):
                _move(s, S.FAILED, now=now, actor=actor, note=result.error)
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
                _move(s, S.SUBMITTED, now=now, actor=actor, note=result.note)
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
                _move(s, target, now=now, actor=actor, note=result.note)
            s.last_error = ""
            polling = target in (S.SUBMITTED, S.COLLECTING)
            s.next_action_at = _next_check(result, now) if polling else None
        s.save()
        _invoice_follow(s, now, actor, result.error or result.note)
    return s


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


# ------------------------------------------------------------------ reports from the rail


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
            _event(
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
        _event(
            s, at=now, from_state=s.state, to_state=s.state, actor=actor, note="Retry requested."
        )
    transaction.on_commit(lambda: _enqueue(s.pk))
    return s


def settlement_cancel(
    *, settlement: Settlement, now: datetime, actor: str, reason: str
) -> Settlement:
    """Stop a pending or failed settlement (the invoice is settled some other way)."""
    if not reason.strip():
        raise ValidationError({"reason": "Say why the settlement is cancelled."})
    with transaction.atomic():
        s = Settlement.objects.select_for_update().get(pk=settlement.pk)
        _move(s, S.CANCELLED, now=now, actor=actor, note=reason)
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


# ------------------------------------------------------------------ billing hooks: void and credit


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
        _record_exchanges(s, result, s.attempts, now)
        if result.outcome == "failed":
            # e.g. an exported ACH debit cannot be recalled: keep tracking it (a return may follow)
            s.last_error = f"Void on the rail failed: {result.error}"
            _event(
                s,
                at=now,
                from_state=s.state,
                to_state=s.state,
                actor="billing",
                note=f"Invoice voided, but the rail refused to void: {result.error}",
            )
        elif can_move(s.state, S.VOIDED):
            _move(s, S.VOIDED, now=now, actor="billing", note=result.note or "Invoice voided.")
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
        _record_exchanges(s, result, s.attempts, now)
        s.external_ids = {**s.external_ids, **result.external_ids}
        _event(
            s,
            at=now,
            from_state=s.state,
            to_state=s.state,
            actor="billing",
            note=f"Credit note {note.number}: {'failed: ' + result.error if result.outcome == 'failed' else 'sent'}.",
        )
        s.save()
