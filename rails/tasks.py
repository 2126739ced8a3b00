from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from rails.outbox import settlement_drive, settlements_drive_due


@shared_task(name="rails.settlement_drive", acks_late=True)
def settlement_drive_task(*, settlement_id: int) -> str:
    """Take the settlement's next due step (retries are scheduled by the settlement itself)."""
    return settlement_drive(settlement_id=settlement_id, now=timezone.now())


@shared_task(name="rails.settlements_drive", acks_late=True)
def settlements_drive_task(*, settlement_ids: list[int]) -> list[str]:
    """``settlement_drive`` for a few settlements in turn (as a billing run opens them).
    One failing does not hold the others up; the first error is raised at the end."""
    results, errors = [], []
    for settlement_id in settlement_ids:
        try:
            results.append(settlement_drive(settlement_id=settlement_id, now=timezone.now()))
        except Exception as exc:  # noqa: BLE001 - re-raised once the rest are driven
            errors.append(exc)
    if errors:
        raise errors[0]
    return results


@shared_task(name="rails.settlements_drive_due", acks_late=True)
def settlements_drive_due_task() -> dict:
    """Every minute: drive settlements whose next step is due (retries, polls)."""
    return settlements_drive_due(now=timezone.now())


from rails.ach.export import ach_export_task  # noqa: E402,F401  registers rails.ach_export
