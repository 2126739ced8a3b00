"""Billing's Celery tasks. Celery discovers this module; it holds the billing clock's beat
and imports each concern's tasks so that a worker registers them all."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

import billing.credits.tasks  # noqa: F401  credits_expire
import billing.documents.tasks  # noqa: F401  PDF rendering
import billing.notifications.tasks  # noqa: F401  webhook deliveries, thresholds
from billing.run import billing_run


@shared_task(name="billing.run", acks_late=True)
def billing_run_task() -> dict:
    """The billing clock's beat: roll up, close periods, issue due drafts, render PDFs."""
    return billing_run(now=timezone.now()).as_dict()
