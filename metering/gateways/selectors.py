"""Reads of what the gateway receivers skipped, for the operator's screens."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime

from metering.models import KongSkippedEntry


@dataclass(frozen=True)
class KongSkipSummary:
    """The Kong logs skipped for one reason over a period, and the latest of them."""

    reason: str
    label: str
    count: int
    last_seen: datetime
    sample: str
    detail: str


def kong_skips(*, since: date | None) -> list[KongSkipSummary]:
    """Skipped Kong logs per reason from the UTC day ``since`` (None: all kept days),
    most skipped first, each with the sample and detail of its latest day. Reads one row
    per day and reason."""
    rows = KongSkippedEntry.objects.order_by("reason", "-last_seen")
    if since is not None:
        rows = rows.filter(day__gte=since)
    summaries: dict[str, KongSkipSummary] = {}
    for row in rows:
        seen = summaries.get(row.reason)
        if seen is None:
            summaries[row.reason] = KongSkipSummary(
                reason=row.reason,
                label=row.get_reason_display(),
                count=row.count,
                last_seen=row.last_seen,
                sample=row.sample,
                detail=row.detail,
            )
        else:
            summaries[row.reason] = replace(seen, count=seen.count + row.count)
    return sorted(summaries.values(), key=lambda s: (-s.count, s.reason))
