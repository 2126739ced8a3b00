"""Celery tasks for webhooks and thresholds: thin edges that read the clock and
make one service call. Retries of a webhook are the delivery's own (its state, attempts
and ``next_attempt_at``), not Celery's, so they survive a broker restart."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from billing.notifications.delivery import deliveries_send_due, delivery_send
from billing.notifications.thresholds import thresholds_check


@shared_task(name="billing.webhook_delivery_send", acks_late=True)
def delivery_send_task(*, delivery_id: int) -> str | None:
    """Attempt one webhook delivery now (enqueued when its event commits)."""

    delivery = delivery_send(delivery_id=delivery_id, now=timezone.now())
    return delivery.state if delivery is not None else None


@shared_task(name="billing.webhook_deliveries_send_due", acks_late=True)
def deliveries_send_due_task() -> dict:
    """Beat: attempt every delivery whose retry is due."""

    return deliveries_send_due(now=timezone.now())


@shared_task(name="billing.thresholds_check", acks_late=True)
def thresholds_check_task() -> dict:
    """Beat: notify entitlement and spend thresholds crossed since the last check."""

    return thresholds_check(now=timezone.now())
