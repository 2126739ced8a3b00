from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from rails.services import settlement_drive, settlements_drive_due


@shared_task(name="rails.settlement_drive", acks_late=True)
def settlement_drive_task(*, settlement_id: int) -> str:
    """Take the settlement's next due step (retries are scheduled by the settlement itself)."""
    return settlement_drive(settlement_id=settlement_id, now=timezone.now())


@shared_task(name="rails.settlements_drive_due", acks_late=True)
def settlements_drive_due_task() -> dict:
    """Every minute: drive settlements whose next step is due (retries, polls)."""
    return settlements_drive_due(now=timezone.now())


from rails.ach.export import ach_export_task  # noqa: E402,F401  registers rails.ach_export
