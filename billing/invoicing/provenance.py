"""The usage behind an invoice line: the rollup buckets and the raw events it was priced on.

A usage line bills one customer (the subsidiary whose usage it is) for one feature over
the line's service period. Its usage is the events of the feature's meter type whose
subject mapped to that customer at the event's own time, inside ``[period_start,
period_end)``, whose dimensions pass the feature's filters. ``metering.usage`` reads it
from two places, and proves it from the same two (this module asks it for them):

- the hourly buckets of the whole UTC hours inside the period (attributed by the rollup,
  re-attributed when a consumer mapping changes);
- the raw events of the partial hours at the period's edges (a period that starts at
  midnight in Asia/Kolkata starts at 18:30 UTC) and the events not rolled up yet.

For ``COUNT`` and ``SUM`` meters the bucket totals plus the raw remainder equal the
line's quantity, and so does the count (or sum) over ``line_events_iter``. Usage that
arrives after an invoice is issued stays in the same buckets and events: the issued line
keeps its quantity and the difference is billed on a later invoice as a prior-period
adjustment, so ``LineUsage.agrees`` is then false and says why in ``note``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import QuerySet

from billing.models import InvoiceLine, InvoiceStatus, LineKind
from core.safe_csv import csv_safe_writer
from metering.models import Aggregation, Meter, UsageBucket
from metering.usage import (
    EVENT_COLUMNS,
    UsageTotals,
    usage_breakdown,
    usage_buckets,
    usage_events_iter,
)

PROVABLE_KINDS = (LineKind.USAGE, LineKind.PRIOR_PERIOD_ADJUSTMENT)


class NotProvable(ValueError):
    """The line has no usage behind it (a flat fee, a manual line, a true-up...)."""


@dataclass(frozen=True)
class LineUsage:
    """What the line's usage is made of now, beside what the line says."""

    line: InvoiceLine
    meter: Meter
    start: datetime
    end: datetime
    bucket_start: datetime  # buckets cover the whole hours [bucket_start, bucket_end)
    bucket_end: datetime
    buckets: int
    bucket_totals: UsageTotals
    raw_totals: UsageTotals  # the edge hours and the events not rolled up yet
    quantity: Decimal  # the customer's quantity now, as the meter aggregates
    line_quantity: Decimal | None

    @property
    def agrees(self) -> bool:
        return self.line_quantity is not None and self.quantity == self.line_quantity

    @property
    def note(self) -> str:
        line = self.line
        if line.kind == LineKind.PRIOR_PERIOD_ADJUSTMENT:
            return (
                "A prior-period adjustment bills the difference between this usage and what "
                "the original invoice and earlier adjustments billed."
            )
        if self.agrees:
            return "The usage below adds up to the line's quantity."
        if line.invoice.status != InvoiceStatus.DRAFT:
            return (
                "Usage for this period arrived after the invoice was rated; the issued line "
                "keeps its quantity and the difference is billed on a later invoice as a "
                "prior-period adjustment."
            )
        return "Usage arrived after the draft was last recomputed; it is picked up at the next recompute."


def is_provable(line: InvoiceLine) -> bool:
    """Whether the line has usage behind it: a usage line or a prior-period adjustment."""
    return (
        line.kind in PROVABLE_KINDS
        and line.feature_id is not None
        and line.period_start is not None
    )


def _check(line: InvoiceLine) -> tuple[Meter, dict, datetime, datetime]:
    if not is_provable(line):
        raise NotProvable(
            f"Line {line.pk} ({line.get_kind_display().lower()}) has no usage behind it."
        )
    feature = line.feature
    return feature.meter, feature.filters or {}, line.period_start, line.period_end


def line_usage_buckets(*, line: InvoiceLine) -> QuerySet[UsageBucket]:
    """The rollup buckets behind a usage line, oldest hour first.

    Raises ``NotProvable`` for a line without usage.
    """
    meter, filters, start, end = _check(line)
    return usage_buckets(
        meter=meter, customer_ids=[line.customer_id], filters=filters, start=start, end=end
    )


def line_usage(*, line: InvoiceLine) -> LineUsage:
    """The line's usage now: bucket totals, the raw remainder, and the exact quantity.

    Raises ``NotProvable`` for a line without usage.
    """
    meter, filters, start, end = _check(line)
    usage = usage_breakdown(
        meter=meter, customer_ids=[line.customer_id], filters=filters, start=start, end=end
    )
    return LineUsage(
        line=line,
        meter=meter,
        start=start,
        end=end,
        bucket_start=usage.bucket_start,
        bucket_end=usage.bucket_end,
        buckets=usage.buckets,
        bucket_totals=usage.bucket_totals,
        raw_totals=usage.raw_totals,
        quantity=usage.quantity,
        line_quantity=line.quantity,
    )


def bucket_value(bucket: UsageBucket, aggregation: str) -> Decimal | None:
    """A bucket's own value as its meter aggregates (the distinct count is not kept per bucket)."""
    return {
        Aggregation.COUNT: Decimal(bucket.event_count),
        Aggregation.SUM: bucket.value_sum,
        Aggregation.MIN: bucket.value_min,
        Aggregation.MAX: bucket.value_max,
        Aggregation.AVG: bucket.value_sum / bucket.value_count if bucket.value_count else None,
        Aggregation.LATEST: bucket.latest_value,
    }.get(aggregation)


def line_events_iter(*, line: InvoiceLine, chunk_size: int = 2000) -> Iterator[tuple]:
    """The raw events behind a usage line, oldest first, as tuples in ``EVENT_COLUMNS``
    order (``customer`` is the line customer's key; ``dims`` and ``data`` are JSON text).

    Read ``chunk_size`` rows at a time, so a line backed by millions of events never sits
    in memory. Raises ``NotProvable`` for a line without usage.
    """
    meter, filters, start, end = _check(line)
    return usage_events_iter(
        meter=meter,
        customer_ids=[line.customer_id],
        filters=filters,
        start=start,
        end=end,
        chunk_size=chunk_size,
    )


class _Echo:
    def write(self, value: str) -> str:
        return value


def line_events_csv(*, line: InvoiceLine, rows_per_chunk: int = 1000) -> Iterator[str]:
    """``line_events_iter`` as CSV text, a header then chunks of ``rows_per_chunk`` rows,
    for a ``StreamingHttpResponse``. Raises ``NotProvable`` when iterated for a line
    without usage (check ``is_provable`` before answering).

    Written by ``core.safe_csv``: the event's own texts (source, id, type, subject, its
    dimensions and data) come from whoever posted it, so a cell a spreadsheet would run
    as a formula is neutralised; the value is the product's Decimal and stays a number."""
    _check(line)
    writer = csv_safe_writer(_Echo())
    yield writer.writerow(EVENT_COLUMNS)
    chunk: list[str] = []
    for (
        time,
        source,
        event_id,
        type_,
        subject,
        customer,
        value,
        dims,
        data,
        ingested,
    ) in line_events_iter(line=line):
        row = [time, source, event_id, type_, subject, customer, value, dims, data or ""]
        chunk.append(writer.writerow([*row, ingested]))
        if len(chunk) >= rows_per_chunk:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)


__all__ = [
    "EVENT_COLUMNS",
    "LineUsage",
    "NotProvable",
    "UsageTotals",
    "bucket_value",
    "is_provable",
    "line_events_csv",
    "line_events_iter",
    "line_usage",
    "line_usage_buckets",
]
