"""Notifications: an outbox of events for webhook endpoints.

``notify`` inserts the event with ``ON CONFLICT DO NOTHING`` on its ``dedupe_key``, so
concurrent callers who noticed the same thing make one event, and one delivery per
endpoint; sending (``billing.notifications.delivery``) is enqueued when the transaction
commits. Invoice and settlement events are built here too; threshold crossings are found
by ``billing.notifications.thresholds``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from celery import current_app
from django.db import transaction
from django.db.models import Q

from billing.models import (
    Invoice,
    InvoiceEvent,
    NotificationEvent,
    WebhookDelivery,
    WebhookEndpoint,
)
from billing.notifications.models import EventType
from core.money import money_text
from customers.models import Customer

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- the outbox


def notify(
    *,
    type: str,
    payload: dict,
    dedupe_key: str,
    now: datetime,
    customer: Customer | None = None,
    endpoints: Iterable[int] = (),
) -> NotificationEvent | None:
    """Record an event (``payload`` is its ``data``) and a delivery to every enabled
    endpoint subscribed to ``type`` and to each of ``endpoints`` (ids) that is enabled.

    Returns the new event, or None when an event with ``dedupe_key`` already exists (or
    is being inserted by a concurrent transaction that then commits). Sending is
    enqueued when the surrounding transaction commits.
    """
    (event,) = notify_many(
        events=[(type, payload, dedupe_key, customer)], now=now, endpoints=endpoints
    )
    return event


def notify_many(
    *,
    events: list[tuple[str, dict, str, Customer | None]],
    now: datetime,
    endpoints: Iterable[int] = (),
) -> list[NotificationEvent | None]:
    """``notify`` for many (type, payload, dedupe key, customer) at once, in a few
    statements; the result, in order, holds None for each event that already existed."""
    rows = [
        NotificationEvent(
            type=type,
            dedupe_key=dedupe_key[:300],
            customer=customer,
            created_at=now,
            payload={"type": type, "timestamp": now.isoformat(), "data": payload},
        )
        for type, payload, dedupe_key, customer in events
    ]
    extra = list(endpoints)
    with transaction.atomic():
        # INSERT ... ON CONFLICT DO NOTHING: a concurrent insert of the same key waits
        # for the other transaction and then inserts nothing.
        NotificationEvent.objects.bulk_create(rows, ignore_conflicts=True)
        kept = set(
            NotificationEvent.objects.filter(pk__in=[r.pk for r in rows]).values_list(
                "pk", flat=True
            )
        )
        new = [r for r in rows if r.pk in kept]
        targets = {
            type: list(
                WebhookEndpoint.objects.filter(enabled=True)
                .filter(Q(events__contains=[type]) | Q(pk__in=extra))
                .order_by("pk")
            )
            for type in sorted({r.type for r in new})
        }
        deliveries = WebhookDelivery.objects.bulk_create(
            WebhookDelivery(event=event, endpoint=endpoint, created_at=now, next_attempt_at=now)
            for event in new
            for endpoint in targets[event.type]
        )
        ids = [d.pk for d in deliveries]
        if ids:
            transaction.on_commit(lambda: deliveries_enqueue(ids), robust=True)
    return [r if r.pk in kept else None for r in rows]


# billing.notifications.tasks, which calls this module: sent by name, not imported.
DELIVERY_SEND_TASK = "billing.webhook_delivery_send"


def deliveries_enqueue(delivery_ids: list[int]) -> None:
    """Send these deliveries from a worker (called once their transaction commits)."""
    task = current_app.tasks[DELIVERY_SEND_TASK]
    for delivery_id in delivery_ids:
        task.delay(delivery_id=delivery_id)


# ---------------------------------------------------------------- invoice and settlement events


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def invoice_data(invoice: Invoice) -> dict:
    """An invoice as webhook data: amounts are decimal strings at the currency's precision."""

    def money(amount: Decimal) -> str | None:
        return money_text(amount, invoice.currency)

    return {
        "id": str(invoice.pk), "number": invoice.number, "status": invoice.status,
        "customer": invoice.customer.key, "currency": invoice.currency,
        "period_start": _iso(invoice.period_start), "period_end": _iso(invoice.period_end),
        "subtotal": money(invoice.subtotal), "tax_total": money(invoice.tax_total),
        "total": money(invoice.total), "credits_applied": money(invoice.credits_applied),
        "amount_due": money(invoice.amount_due), "amount_paid": money(invoice.amount_paid),
        "issued_at": _iso(invoice.issued_at), "due_at": _iso(invoice.due_at),
    }  # fmt: skip


def notify_invoice_issued(*, invoice: Invoice, now: datetime) -> NotificationEvent | None:
    """``BILLING_INVOICE_ISSUED_HOOKS``: ``invoice.issued``, in the issuing transaction."""
    return notify_invoices_issued(invoices=[invoice], now=now)[0]


def notify_invoices_issued(*, invoices: list[Invoice], now: datetime) -> list:
    """``notify_invoice_issued`` for many invoices at once (a billing run's chunk)."""
    return notify_many(
        events=[
            (
                EventType.INVOICE_ISSUED,
                invoice_data(invoice),
                f"invoice.issued:{invoice.pk}",
                invoice.customer,
            )
            for invoice in invoices
        ],
        now=now,
    )


notify_invoice_issued.many = notify_invoices_issued


def notify_invoice_status(
    *, invoice: Invoice, status: str, now: datetime
) -> NotificationEvent | None:
    """``invoice.paid`` or ``invoice.payment_failed`` for a payment state change (other
    states notify nothing). Call it after the change's ``InvoiceEvent`` is written: each
    change notifies once (an invoice paid, returned, then paid again notifies twice)."""
    types = {"paid": EventType.INVOICE_PAID, "payment_failed": EventType.INVOICE_PAYMENT_FAILED}
    if status not in types:
        return None
    change = (
        InvoiceEvent.objects.filter(invoice_id=invoice.pk, to_status=status)
        .order_by("-at", "-pk")
        .first()
    )
    marker = change.pk if change else now.isoformat()
    data = {**invoice_data(invoice), "status": status}
    return notify(
        type=types[status],
        payload=data,
        now=now,
        dedupe_key=f"invoice.{status}:{invoice.pk}:{marker}",
        customer=invoice.customer,
    )


def notify_settlement_failed(*, settlement, now: datetime) -> NotificationEvent | None:
    """``settlement.failed``, for a settlement that failed for good (rails calls this)."""
    invoice = settlement.invoice
    data = {
        "settlement": {
            "id": settlement.pk,
            "rail": settlement.rail,
            "state": settlement.state,
            "attempts": settlement.attempts,
            "error": (settlement.last_error or "")[:2000],
            "sandbox": bool(getattr(settlement, "sandbox", False)),
        },
        "invoice": invoice_data(invoice),
    }
    return notify(
        type=EventType.SETTLEMENT_FAILED,
        payload=data,
        now=now,
        customer=invoice.customer,
        dedupe_key=f"settlement.failed:{settlement.pk}:{settlement.attempts}",
    )
