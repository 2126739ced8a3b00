"""What the gateway receivers write besides events: the count of the logs they skipped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from django.db import connection

from metering.gateways.kong.batch import SkippedLog
from metering.models import KongSkippedEntry

_TABLE = KongSkippedEntry._meta.db_table

# One statement for every reason of one request: each (day, reason) row is created or
# incremented, and keeps the latest sample.
_UPSERT = f"""
INSERT INTO {_TABLE} (day, reason, count, sample, detail, last_seen)
VALUES {{rows}}
ON CONFLICT (day, reason) DO UPDATE SET
    count = {_TABLE}.count + EXCLUDED.count,
    sample = EXCLUDED.sample,
    detail = EXCLUDED.detail,
    last_seen = GREATEST({_TABLE}.last_seen, EXCLUDED.last_seen)
"""


def kong_skips_record(*, skipped: Sequence[SkippedLog], received_at: datetime) -> None:
    """Count ``skipped`` under the UTC day of ``received_at`` and their reasons, keeping
    the last skipped log of each reason as its sample. One statement, and none when
    nothing was skipped; commits on its own (autocommit), so a count survives whatever
    happens to the events of the same request."""
    if not skipped:
        return
    by_reason: dict[str, tuple[int, SkippedLog]] = {}
    for skip in skipped:
        count = by_reason.get(skip.reason, (0, skip))[0]
        by_reason[skip.reason] = (count + 1, skip)
    day = received_at.astimezone(UTC).date()
    params: list[object] = []
    for reason, (count, last) in sorted(by_reason.items()):
        params += [day, reason, count, last.sample, last.detail, received_at]
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(by_reason))
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT.format(rows=rows), params)
