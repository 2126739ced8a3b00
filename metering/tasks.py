from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from metering.partitions import partitions_ensure_ahead
from metering.services import usage_rollup


@shared_task(name="metering.usage_rollup", acks_late=True)
def usage_rollup_task() -> dict:
    """Roll up newly stored events and apply consumer mapping changes (every minute).

    A meter that fails does not fail the task: it is recorded (the dashboard shows it)
    and named in the result; the next run tries it again.
    """
    result = usage_rollup(now=timezone.now())
    return {
        "events": result.events,
        "mapping_changes": result.mapping_changes,
        "refused_events": result.refused,
        "failed_meters": [r.meter for r in result.failed],
        "reattributions_failed": result.reattributions_failed,
    }


@shared_task(name="metering.partitions_ensure_ahead")
def partitions_ensure_ahead_task() -> list[str]:
    """Create the event table's partitions for this month and the next three (daily)."""
    return [m.isoformat() for m in partitions_ensure_ahead(now=timezone.now())]
