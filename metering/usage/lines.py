"""The usage behind a quantity, for proof: the rollup buckets and the raw events a
feature's quantity for some customers over a range is made of (an invoice line's usage).

The quantity is read from two places (see ``exact``), and so is its proof, so it adds
up the same way:

- the hourly buckets of the whole UTC hours inside the range;
- the raw events of the partial hours at its edges and the events not rolled up yet.

For COUNT and SUM meters the bucket totals plus the raw remainder equal the quantity, and
so does the count (or sum) over ``usage_events_iter``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.db.models import Count, Max, Min, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform

from metering import sql
from metering.models import Meter, UsageBucket
from metering.usage.exact import quantity_of, usage_partials

# the columns of ``usage_events_iter``'s rows, in order
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


@dataclass(frozen=True)
class UsageTotals:
    event_count: int = 0
    value_count: int = 0
    value_sum: Decimal = Decimal(0)
    value_min: Decimal | None = None
    value_max: Decimal | None = None


@dataclass(frozen=True)
class UsageBreakdown:
    """What a quantity is made of now: the buckets of the whole hours
    ``[bucket_start, bucket_end)`` and the raw remainder (the edge hours and the events
    not rolled up yet), beside the quantity as the meter aggregates."""

    bucket_start: datetime
    bucket_end: datetime
    buckets: int
    bucket_totals: UsageTotals
    raw_totals: UsageTotals
    quantity: Decimal


def usage_buckets(
    *,
    meter: Meter,
    customer_ids: Iterable[int],
    filters: Mapping[str, Sequence],
    start: datetime,
    end: datetime,
) -> QuerySet[UsageBucket]:
    """The rollup buckets behind the customers' usage of ``meter`` (its dimensions
    passing ``filters``) over ``[start, end)``: those of the whole UTC hours inside it,
    oldest hour first."""
    inner_start, inner_end = sql.whole_hours(start, end)
    buckets = UsageBucket.objects.filter(
        meter=meter, customer_id__in=list(customer_ids), hour__gte=inner_start, hour__lt=inner_end
    )
    for i, (name, values) in enumerate(sorted(filters.items())):
        alias = f"_dim{i}"
        buckets = buckets.alias(**{alias: KeyTextTransform(name, "dims")}).filter(
            **{f"{alias}__in": [str(v) for v in values]}
        )
    return buckets.select_related("meter", "customer").order_by("hour", "subject", "pk")


def _events_sql(
    meter: Meter,
    customer_ids: Iterable[int],
    filters: Mapping[str, Sequence],
    start: datetime,
    end: datetime,
    select: str,
    *,
    extra_where: str = "",
) -> tuple[str, dict]:
    params: dict = {
        "type": meter.event_type,
        "customers": sorted(set(customer_ids)),
        "start": start,
        "end": end,
    }
    dims = sql.dims_expr(meter, params)
    value = sql.value_expr(meter, params)
    where = " AND ".join(sql.dims_filter(filters, sql.binder(params), column="ev.dims")) or "TRUE"
    # The mappings of these customers first: a handful of consumer keys, each read from
    # the (subject, time) index over the range's partitions.
    query = f"""
        SELECT {select} FROM (
            SELECT e.id AS pk, e.time, e.source, e.event_id, e.type, e.subject, e.data,
                   e.ingested_at, e.xid, c.key AS customer_key, {value} AS v, {dims} AS dims
            FROM customers_consumermapping m
            JOIN customers_customer c ON c.id = m.customer_id
            JOIN metering_event e
              ON e.subject = m.consumer_key AND e.time >= m.valid_from
             AND (m.valid_to IS NULL OR e.time < m.valid_to)
            WHERE m.customer_id = ANY(%(customers)s) AND e.type = %(type)s
              AND e.time >= %(start)s AND e.time < %(end)s {extra_where}
        ) ev
        WHERE {where}
    """
    return query, params


def usage_breakdown(
    *,
    meter: Meter,
    customer_ids: Iterable[int],
    filters: Mapping[str, Sequence],
    start: datetime,
    end: datetime,
) -> UsageBreakdown:
    """The customers' usage of ``meter`` (filtered) over ``[start, end)`` now: bucket
    totals, the raw remainder, and the exact quantity (``feature_usage``'s)."""
    ids = sorted(set(customer_ids))
    bucket_start, bucket_end = sql.whole_hours(start, end)
    agg = usage_buckets(
        meter=meter, customer_ids=ids, filters=filters, start=start, end=end
    ).aggregate(
        buckets=Count("pk"),
        events=Sum("event_count"),
        values=Sum("value_count"),
        total=Sum("value_sum"),
        low=Min("value_min"),
        high=Max("value_max"),
    )
    partials = usage_partials(
        meter=meter, filters=dict(filters), customer_ids=ids, start=start, end=end
    )
    distinct = partials.pop(-1).distinct if -1 in partials else None
    query, params = _events_sql(
        meter,
        ids,
        filters,
        start,
        end,
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
    return UsageBreakdown(
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
        raw_totals=UsageTotals(int(count), int(values), Decimal(total), low, high),
        quantity=quantity_of(meter.aggregation, partials.values(), distinct_total=distinct),
    )


def usage_events_iter(
    *,
    meter: Meter,
    customer_ids: Iterable[int],
    filters: Mapping[str, Sequence],
    start: datetime,
    end: datetime,
    chunk_size: int = 2000,
) -> Iterator[tuple]:
    """The raw events behind the customers' usage of ``meter`` (filtered) over
    ``[start, end)``, oldest first, as tuples in ``EVENT_COLUMNS`` order (``customer``
    is the key of the customer the event is attributed to; ``dims`` and ``data`` are
    JSON text).

    Read through a server-side cursor ``chunk_size`` rows at a time, so millions of
    events never sit in memory."""
    query, params = _events_sql(
        meter,
        customer_ids,
        filters,
        start,
        end,
        "ev.time, ev.source, ev.event_id, ev.type, ev.subject, ev.customer_key, ev.v, "
        "ev.dims::text, ev.data::text, ev.ingested_at",
    )
    query += " ORDER BY ev.time, ev.pk"
    # A named (server-side) cursor. Outside a transaction Django declares it WITH HOLD:
    # PostgreSQL keeps the result on the server and the snapshot is released at once, so
    # a slow download never holds back the rollup's transaction horizon.
    with connection.chunked_cursor() as cursor:
        cursor.execute(query, params)
        while rows := cursor.fetchmany(chunk_size):
            yield from rows
