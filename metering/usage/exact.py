"""Exact usage of a feature over any half-open time range, per customer.

Whole UTC hours inside the range come from the rollup buckets; the partial hours at its
edges (a period that starts at midnight in Asia/Kolkata starts at 18:30 UTC), and events
not yet rolled up, come from the raw events. Everything is read in one statement per
question, so the buckets and the watermark that says what they hold are seen together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import connection

from metering import sql
from metering.models import Aggregation, Feature, Meter, UsageTouch


@dataclass(frozen=True)
class Partial:
    """What an exact answer needs for one customer: combinable across customers."""

    events: int = 0
    values: int = 0
    total: Decimal = Decimal(0)
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    latest_key: tuple | None = None  # (time, event id)
    latest: Decimal | None = None
    distinct: int = 0


@dataclass(frozen=True)
class FeatureUsage:
    aggregation: str
    quantity: Decimal
    by_customer: dict[int, Decimal] = field(default_factory=dict)


def quantity_of(
    aggregation: str, partials: Iterable[Partial], *, distinct_total: int | None = None
) -> Decimal:
    """Combine per-customer partials into one quantity for the aggregation."""
    parts = list(partials)
    if aggregation == Aggregation.COUNT:
        return Decimal(sum(p.events for p in parts))
    if aggregation == Aggregation.SUM:
        return sum((p.total for p in parts), Decimal(0))
    if aggregation == Aggregation.UNIQUE_COUNT:
        return Decimal(
            distinct_total if distinct_total is not None else sum(p.distinct for p in parts)
        )
    if aggregation == Aggregation.MIN:
        mins = [p.minimum for p in parts if p.minimum is not None]
        return min(mins) if mins else Decimal(0)
    if aggregation == Aggregation.MAX:
        maxs = [p.maximum for p in parts if p.maximum is not None]
        return max(maxs) if maxs else Decimal(0)
    if aggregation == Aggregation.AVG:
        count = sum(p.values for p in parts)
        return sum((p.total for p in parts), Decimal(0)) / count if count else Decimal(0)
    if aggregation == Aggregation.LATEST:
        latest = [p for p in parts if p.latest_key is not None]
        return max(latest, key=lambda p: p.latest_key).latest if latest else Decimal(0)
    raise ValueError(f"Unknown aggregation {aggregation!r}")


def _filters_sql(filters: dict, params: dict, column: str) -> str:
    return " AND ".join(sql.dims_filter(filters, sql.binder(params), column=column)) or "TRUE"


_PARTIALS = """
WITH wm AS (SELECT coalesce((SELECT watermark FROM metering_rollupstate WHERE meter_id = %(meter)s), 0) AS w),
raw AS (
    SELECT m.customer_id, e.id, e.time, {value} AS v, {dims} AS dims
    FROM metering_event e
    JOIN customers_consumermapping m
      ON m.consumer_key = e.subject AND m.valid_from <= e.time AND (m.valid_to IS NULL OR e.time < m.valid_to)
    WHERE e.type = %(type)s AND m.customer_id = ANY(%(customers)s)
      AND e.time >= %(start)s AND e.time < %(end)s
      AND (e.time < %(inner_start)s OR e.time >= %(inner_end)s OR e.xid >= (SELECT w FROM wm))
),
parts AS (
    SELECT customer_id, event_count, value_count, value_sum, value_min, value_max,
           latest_time, latest_event_id, latest_value
    FROM metering_usagebucket b
    WHERE b.meter_id = %(meter)s AND b.customer_id = ANY(%(customers)s)
      AND b.hour >= %(inner_start)s AND b.hour < %(inner_end)s AND {bucket_filter}
    UNION ALL
    SELECT customer_id, 1, (v IS NOT NULL)::int, coalesce(v, 0), v, v,
           CASE WHEN v IS NOT NULL THEN time END, CASE WHEN v IS NOT NULL THEN id END, v
    FROM raw WHERE {raw_filter}
)
SELECT customer_id, sum(event_count), sum(value_count), sum(value_sum), min(value_min), max(value_max),
       (array_agg(latest_time ORDER BY latest_time DESC NULLS LAST, latest_event_id DESC NULLS LAST))[1],
       (array_agg(latest_event_id ORDER BY latest_time DESC NULLS LAST, latest_event_id DESC NULLS LAST))[1],
       (array_agg(latest_value ORDER BY latest_time DESC NULLS LAST, latest_event_id DESC NULLS LAST))[1]
FROM parts GROUP BY customer_id
"""

_DISTINCT = """
WITH wm AS (SELECT coalesce((SELECT watermark FROM metering_rollupstate WHERE meter_id = %(meter)s), 0) AS w),
vals AS (
    SELECT b.customer_id, v.value
    FROM metering_usagebucket b CROSS JOIN LATERAL unnest(b.unique_values) AS v(value)
    WHERE b.meter_id = %(meter)s AND b.customer_id = ANY(%(customers)s)
      AND b.hour >= %(inner_start)s AND b.hour < %(inner_end)s AND {bucket_filter}
    UNION
    SELECT r.customer_id, r.u FROM (
        SELECT m.customer_id, {unique} AS u, {dims} AS dims
        FROM metering_event e
        JOIN customers_consumermapping m
          ON m.consumer_key = e.subject AND m.valid_from <= e.time AND (m.valid_to IS NULL OR e.time < m.valid_to)
        WHERE e.type = %(type)s AND m.customer_id = ANY(%(customers)s)
          AND e.time >= %(start)s AND e.time < %(end)s
          AND (e.time < %(inner_start)s OR e.time >= %(inner_end)s OR e.xid >= (SELECT w FROM wm))
    ) r WHERE r.u IS NOT NULL AND {raw_filter}
)
SELECT customer_id, count(DISTINCT value) FROM vals GROUP BY customer_id
UNION ALL
SELECT NULL, count(DISTINCT value) FROM vals
"""


def _params(meter: Meter, customer_ids: list[int], start: datetime, end: datetime) -> dict:
    inner_start, inner_end = sql.whole_hours(start, end)
    return {
        "meter": meter.pk,
        "type": meter.event_type,
        "customers": customer_ids,
        "start": start,
        "end": end,
        "inner_start": inner_start,
        "inner_end": inner_end,
    }


def usage_partials(
    *, meter: Meter, filters: dict, customer_ids: Iterable[int], start: datetime, end: datetime
) -> dict[int, Partial]:
    """Per-customer partial aggregates of ``meter`` (filtered by dimensions) over ``[start, end)``."""
    ids = sorted(set(customer_ids))
    if not ids or end <= start:
        return {}
    params = _params(meter, ids, start, end)
    value = sql.value_expr(meter, params)
    dims = sql.dims_expr(meter, params)
    bucket_filter = _filters_sql(filters, params, "b.dims")
    raw_filter = _filters_sql(filters, params, "dims")
    partials: dict[int, Partial] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            _PARTIALS.format(
                value=value, dims=dims, bucket_filter=bucket_filter, raw_filter=raw_filter
            ),
            params,
        )
        for (
            customer_id,
            events,
            values,
            total,
            minimum,
            maximum,
            l_time,
            l_id,
            l_value,
        ) in cursor.fetchall():
            latest_key = (l_time, l_id) if l_time is not None else None
            partials[customer_id] = Partial(
                events=int(events),
                values=int(values),
                total=Decimal(total),
                minimum=minimum,
                maximum=maximum,
                latest_key=latest_key,
                latest=l_value,
            )
        if meter.aggregation == Aggregation.UNIQUE_COUNT:
            unique = sql.unique_expr(meter, params)
            cursor.execute(
                _DISTINCT.format(
                    unique=unique,
                    dims=dims,
                    bucket_filter=_filters_sql(filters, params, "b.dims"),
                    raw_filter=raw_filter,
                ),
                params,
            )
            for customer_id, distinct in cursor.fetchall():
                key = customer_id if customer_id is not None else -1
                base = partials.get(key, Partial())
                partials[key] = Partial(**{**base.__dict__, "distinct": int(distinct)})
    return partials


def feature_usage(
    *, feature: Feature, customer_ids: Iterable[int], start: datetime, end: datetime
) -> FeatureUsage:
    """The feature's quantity over ``[start, end)`` for a group of customers, combined as
    the meter aggregates (a unique count is distinct over the whole group), and each
    customer's own quantity beside it (the weights for allocating a shared charge)."""
    meter = feature.meter
    partials = usage_partials(
        meter=meter, filters=feature.filters or {}, customer_ids=customer_ids, start=start, end=end
    )
    distinct_total = partials.pop(-1).distinct if -1 in partials else None
    return usage_of(meter.aggregation, partials, distinct_total=distinct_total)


def usage_of(
    aggregation: str, partials: dict[int, Partial], *, distinct_total: int | None = None
) -> FeatureUsage:
    """A group's usage from its customers' partial aggregates (``distinct_total``: the
    unique count over the whole group, which the customers' own counts cannot give)."""
    by_customer = {cid: quantity_of(aggregation, [p]) for cid, p in partials.items()}
    if aggregation == Aggregation.UNIQUE_COUNT:
        by_customer = {cid: Decimal(p.distinct) for cid, p in partials.items()}
    quantity = quantity_of(aggregation, partials.values(), distinct_total=distinct_total)
    return FeatureUsage(aggregation=aggregation, quantity=quantity, by_customer=by_customer)


def usage_changed_since(
    *, customer_ids: Iterable[int], start: datetime, end: datetime, xid: int
) -> bool:
    """Whether rolled-up usage of these customers in ``[start, end)`` may have changed in a
    transaction at or above ``xid`` (conservative: whole UTC days around the range)."""
    return bool(usage_changed_since_many(checks=[(customer_ids, start, end, xid)]))


_CHANGED = """
SELECT DISTINCT v.i
FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::timestamptz[], %s::timestamptz[])
     AS v(i, customer_id, xid, start, "end")
WHERE EXISTS (
    SELECT 1 FROM metering_usagetouch t
    WHERE t.customer_id = v.customer_id AND t.xid >= v.xid
      AND t.day >= (v.start AT TIME ZONE 'UTC')::date AND t.day <= (v."end" AT TIME ZONE 'UTC')::date
)
"""


def usage_changed_since_many(
    *, checks: list[tuple[Iterable[int], datetime, datetime, int]]
) -> set[int]:
    """``usage_changed_since`` for many (customer ids, start, end, xid) in one statement:
    the positions in ``checks`` whose usage may have changed."""
    rows = [
        (i, customer_id, xid, start, end)
        for i, (customer_ids, start, end, xid) in enumerate(checks)
        for customer_id in customer_ids
    ]
    if not rows:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(_CHANGED, [list(column) for column in zip(*rows, strict=True)])
        return {row[0] for row in cursor.fetchall()}


def customers_with_usage_changed_since(*, xid: int) -> list[int]:
    """The customers whose rolled-up usage changed in a transaction at or above ``xid``
    (a rollup or a re-attribution touched them), by id."""
    return sorted(
        UsageTouch.objects.filter(xid__gte=xid)
        .values_list("customer_id", flat=True)
        .distinct()
        .order_by()
    )


def current_xmin() -> int:
    """The transaction horizon now: every transaction below it has finished."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        return cursor.fetchone()[0]
