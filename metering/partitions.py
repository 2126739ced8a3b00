"""Monthly partitions of ``metering_event``.

A beat task creates the coming months ahead; ingestion creates a missing month on demand
(a backfill of old events, or a clock far ahead), so no event inside the accepted time
window is refused for want of a partition. A request may create only a few months
(``limit``; see docs/limits.md), so no request can fill the catalog with partitions.
There is no default partition: one would have to be emptied before each new month could
be attached.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

from django.db import connection


def month_start(instant: datetime) -> date:
    instant = instant.astimezone(UTC)
    return date(instant.year, instant.month, 1)


def next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"metering_event_p{month.year:04d}_{month.month:02d}"


def existing_partitions() -> set[date]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            JOIN pg_class p ON p.oid = i.inhparent
            WHERE p.relname = 'metering_event'
            """
        )
        names = [row[0] for row in cursor.fetchall()]
    months = set()
    for name in names:
        year, month = name.removeprefix("metering_event_p").split("_")
        months.add(date(int(year), int(month), 1))
    return months


class TooManyPartitions(ValueError):
    """Creating the partitions asked for would pass the limit; nothing was created."""

    def __init__(self, missing: list[date], limit: int) -> None:
        self.missing = missing
        self.limit = limit
        super().__init__(
            f"The events fall in {len(missing)} months without a partition yet "
            f"({missing[0]:%Y-%m} to {missing[-1]:%Y-%m}); one request may open at most "
            f"{limit}. Send events of older months in batches spanning fewer months."
        )


def partitions_ensure(months: Iterable[date], *, limit: int | None = None) -> list[date]:
    """Create the partitions for ``months`` that do not exist yet; return those created.

    Raises ``TooManyPartitions``, creating none, when more than ``limit`` are missing
    (None: no limit). Concurrent callers are serialised by an advisory lock, and
    ``IF NOT EXISTS`` makes a second creation of the same month harmless.
    """
    wanted = set(months)
    if not wanted:
        return []
    # One catalog query per call; a process-local cache would go stale when the
    # transaction that created a partition rolls back.
    missing = sorted(wanted - existing_partitions())
    if limit is not None and len(missing) > limit:
        raise TooManyPartitions(missing, limit)
    if missing:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('metering_event partitions', 0))"
            )
            for month in missing:
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {partition_name(month)} PARTITION OF metering_event "
                    f"FOR VALUES FROM ('{month.isoformat()}T00:00:00+00') "
                    f"TO ('{next_month(month).isoformat()}T00:00:00+00')"
                )
    return missing


def partitions_ensure_ahead(*, now: datetime, months_ahead: int = 3) -> list[date]:
    """Create this month's partition and the next ``months_ahead`` (the beat task)."""
    month = month_start(now)
    months = [month]
    for _ in range(months_ahead):
        month = next_month(month)
        months.append(month)
    return partitions_ensure(months)
