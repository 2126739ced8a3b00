"""The usage behind an invoice line: the rollup buckets and the raw events it was priced on.

A usage line bills one customer (the subsidiary whose usage it is) for one feature over
the line's service period. Its usage is the events of the feature's meter type whose
subject mapped to that customer at the event's own time, inside ``[period_start,
period_end)``, whose dimensions pass the feature's filters. ``metering.usage`` reads it
from two places, and so does this module, so the proof adds up the same way:

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
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import Count, Max, Min, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform

from billing.models import InvoiceLine, InvoiceStatus, LineKind
from core.safe_csv import csv_safe_writer
from metering import sql
from metering.models import Aggregation, Meter, UsageBucket
from metering.usage import quantity_of, usage_partials

HOUR = timedelta(hours=1)
PROVABLE_KINDS = (LineKind.USAGE, LineKind.PRIOR_PERIOD_ADJUSTMENT)
EVENT_COLUMNS = (
    "time",
    "source",
    "id",
    "type",
    "subject",
    "customer",
    "value",
    "dims",
    "data",
    "ingested_at",
)


class NotProvable(ValueError):
    """The line has no usage behind it (a flat fee, a manual line, a true-up...)."""


@dataclass(frozen=True)
class UsageTotals:
    event_count: int = 0
    value_count: int = 0
    value_sum: Decimal = Decimal(0)
    value_min: Decimal | None = None
    value_max: Decimal | None = None


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


def _floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(t: datetime) -> datetime:
    floor = _floor_hour(t)
    return floor if floor == t else floor + HOUR


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


def _bucket_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The whole UTC hours inside ``[start, end)`` (as ``metering.usage`` reads them)."""
    inner_start, inner_end = _ceil_hour(start), _floor_hour(end)
    if inner_end < inner_start:  # the whole range lies inside one hour
        return start, start
    return inner_start, inner_end


def line_usage_buckets(*, line: InvoiceLine) -> QuerySet[UsageBucket]:
    """The rollup buckets behind a usage line, oldest hour first.

    Raises ``NotProvable`` for a line without usage.
    """
    meter, filters, start, end = _check(line)
    inner_start, inner_end = _bucket_range(start, end)
    buckets = UsageBucket.objects.filter(
        meter=meter, customer_id=line.customer_id, hour__gte=inner_start, hour__lt=inner_end
    )
    for i, (name, values) in enumerate(sorted(filters.items())):
        alias = f"_dim{i}"
        buckets = buckets.alias(**{alias: KeyTextTransform(name, "dims")}).filter(
            **{f"{alias}__in": [str(v) for v in values]}
        )
    return buckets.select_related("meter", "customer").order_by("hour", "subject", "pk")


def _events_sql(line: InvoiceLine, select: str, *, extra_where: str = "") -> tuple[str, dict]:
    meter, filters, start, end = _check(line)
    params: dict = {
        "type": meter.event_type,
        "customer": line.customer_id,
        "start": start,
        "end": end,
    }
    dims = sql.dims_expr(meter, params)
    value = sql.value_expr(meter, params)
    clauses = []
    for i, (name, values) in enumerate(sorted(filters.items())):
        params[f"fn{i}"] = name
        params[f"fv{i}"] = [str(v) for v in values]
        clauses.append(f"(ev.dims ->> %(fn{i})s) = ANY(%(fv{i})s)")
    where = " AND ".join(clauses) or "TRUE"
    # The mappings of this customer first: a handful of consumer keys, each read from the
    # (subject, time) index over the period's partitions.
    query = f"""
        SELECT {select} FROM (
            SELECT e.id AS pk, e.time, e.source, e.event_id, e.type, e.subject, e.data,
                   e.ingested_at, e.xid, {value} AS v, {dims} AS dims
            FROM customers_consumermapping m
            JOIN metering_event e
              ON e.subject = m.consumer_key AND e.time >= m.valid_from
             AND (m.valid_to IS NULL OR e.time < m.valid_to)
            WHERE m.customer_id = %(customer)s AND e.type = %(type)s
              AND e.time >= %(start)s AND e.time < %(end)s {extra_where}
        ) ev
        WHERE {where}
    """
    return query, params


def _raw_totals(line: InvoiceLine, bucket_start: datetime, bucket_end: datetime) -> UsageTotals:
    meter = line.feature.meter
    query, params = _events_sql(
        line,
        "count(*), count(ev.v), coalesce(sum(ev.v), 0), min(ev.v), max(ev.v)",
        extra_where=(
            "AND (e.time < %(bucket_start)s OR e.time >= %(bucket_end)s OR e.xid >= coalesce("
            "(SELECT watermark FROM metering_rollupstate WHERE meter_id = %(meter)s), 0))"
        ),
    )
    params.update(bucket_start=bucket_start, bucket_end=bucket_end, meter=meter.pk)
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        count, values, total, low, high = cursor.fetchone()
    return UsageTotals(int(count), int(values), Decimal(total), low, high)


def line_usage(*, line: InvoiceLine) -> LineUsage:
    """The line's usage now: bucket totals, the raw remainder, and the exact quantity.

    Raises ``NotProvable`` for a line without usage.
    """
    meter, filters, start, end = _check(line)
    bucket_start, bucket_end = _bucket_range(start, end)
    agg = line_usage_buckets(line=line).aggregate(
        buckets=Count("pk"),
        events=Sum("event_count"),
        values=Sum("value_count"),
        total=Sum("value_sum"),
        low=Min("value_min"),
        high=Max("value_max"),
    )
    partials = usage_partials(
        meter=meter, filters=filters, customer_ids=[line.customer_id], start=start, end=end
    )
    distinct = partials.pop(-1).distinct if -1 in partials else None
    quantity = quantity_of(meter.aggregation, partials.values(), distinct_total=distinct)
    return LineUsage(
        line=line,
        meter=meter,
        start=start,
        end=end,
        bucket_start=bucket_start,
        bucket_end=bucket_end,
        buckets=agg["buckets"],
        bucket_totals=UsageTotals(
            int(agg["events"] or 0),
            int(agg["values"] or 0),
            agg["total"] or Decimal(0),
            agg["low"],
            agg["high"],
        ),
        raw_totals=_raw_totals(line, bucket_start, bucket_end),
        quantity=quantity,
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

    Read through a server-side cursor ``chunk_size`` rows at a time, so a line backed by
    millions of events never sits in memory. Raises ``NotProvable`` for a line without usage.
    """
    query, params = _events_sql(
        line,
        "ev.time, ev.source, ev.event_id, ev.type, ev.subject, %(customer_key)s, ev.v, "
        "ev.dims::text, ev.data::text, ev.ingested_at",
    )
    params["customer_key"] = line.customer.key
    query += " ORDER BY ev.time, ev.pk"
    # A named (server-side) cursor. Outside a transaction Django declares it WITH HOLD:
    # PostgreSQL keeps the result on the server and the snapshot is released at once, so
    # a slow download never holds back the rollup's transaction horizon.
    with connection.chunked_cursor() as cursor:
        cursor.execute(query, params)
        while rows := cursor.fetchmany(chunk_size):
            yield from rows


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
