"""Celery task for credits: a thin edge that reads the clock and makes one service call."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from billing.credits.services import credit_expire_due


@shared_task(name="billing.credits_expire", acks_late=True)
def credits_expire_task() -> dict:
    """Beat: write the expiry of every credit grant that has expired."""
    return credit_expire_due(now=timezone.now())
