"""Usage for charts over many meters at once."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from django.db import connection

_EVENTS_PER_DAY = """
SELECT b.meter_id, date_trunc('day', b.hour, 'UTC') AS day, sum(b.event_count)
FROM metering_usagebucket b
WHERE b.meter_id = ANY(%s) AND b.hour >= %s AND b.hour < %s
GROUP BY 1, 2
"""


def meter_events_per_day(
    *, meter_ids: Iterable[int], start: datetime, end: datetime
) -> dict[tuple[int, datetime], int]:
    """Events counted per meter per UTC day (by event time) whose hour lies in
    ``[start, end)``, from the hourly buckets, keyed by (meter id, the day's UTC start);
    days without events are left out. Each meter counts its own events, so one event
    counted by two meters counts in both; usage not rolled up yet is not included."""
    with connection.cursor() as cursor:
        cursor.execute(_EVENTS_PER_DAY, [list(meter_ids), start, end])
        return {(m, day.astimezone(UTC)): int(n) for m, day, n in cursor.fetchall()}
