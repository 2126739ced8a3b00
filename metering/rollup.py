"""Incremental rollup of raw events into hourly usage buckets, with set-based SQL.

Each meter has a watermark: a transaction id below which every event is in its buckets.
A run locks the meter's watermark row, takes ``pg_snapshot_xmin`` of its own snapshot as
the new horizon (every transaction below it has finished, so no event with a lower id
can still appear), aggregates the events stamped in ``[watermark, horizon)`` into the
buckets with one upsert, and moves the watermark, all in one transaction. Re-running is
harmless and two workers serialise on the row lock, so an event is counted exactly once;
an ingest transaction that commits late is simply picked up by the next run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import F

from metering import sql
from metering.models import Aggregation, Meter, RollupState


@dataclass(frozen=True)
class RollupResult:
    meter: str
    events: int
    buckets: int
    watermark: int


_BUCKET_UPSERT = """
WITH agg AS (
SELECT %(meter)s::bigint AS meter_id, m.customer_id, s.subject, s.hour, s.dims,
       count(*) AS event_count, count(s.v) AS value_count, coalesce(sum(s.v), 0) AS value_sum,
       min(s.v) AS value_min, max(s.v) AS value_max,
       {latest},
       min(s.time) AS first_time, max(s.time) AS last_time
FROM (
    -- OFFSET 0 keeps the planner from inlining the value and dimension expressions into
    -- every aggregate: each event's JSON is read once, and the sort carries no JSON.
    SELECT e.id, e.subject, e.time, date_trunc('hour', e.time, 'UTC') AS hour,
           {dims} AS dims, {value} AS v
    FROM metering_event e
    WHERE e.type = %(type)s AND {where}
    OFFSET 0
) s
LEFT JOIN customers_consumermapping m
       ON m.consumer_key = s.subject AND m.valid_from <= s.time
      AND (m.valid_to IS NULL OR s.time < m.valid_to)
GROUP BY m.customer_id, s.subject, s.hour, s.dims
), upserted AS (
INSERT INTO metering_usagebucket AS b (
    meter_id, customer_id, subject, hour, dims, event_count, value_count, value_sum,
    value_min, value_max, latest_time, latest_value, latest_event_id, first_time, last_time
)
SELECT * FROM agg
ON CONFLICT (meter_id, customer_id, subject, hour, dims) DO UPDATE SET
    event_count = b.event_count + EXCLUDED.event_count,
    value_count = b.value_count + EXCLUDED.value_count,
    value_sum = b.value_sum + EXCLUDED.value_sum,
    value_min = LEAST(b.value_min, EXCLUDED.value_min),
    value_max = GREATEST(b.value_max, EXCLUDED.value_max),
    latest_time = CASE WHEN {newer} THEN EXCLUDED.latest_time ELSE b.latest_time END,
    latest_value = CASE WHEN {newer} THEN EXCLUDED.latest_value ELSE b.latest_value END,
    latest_event_id = CASE WHEN {newer} THEN EXCLUDED.latest_event_id ELSE b.latest_event_id END,
    first_time = LEAST(b.first_time, EXCLUDED.first_time),
    last_time = GREATEST(b.last_time, EXCLUDED.last_time)
RETURNING 1
), touched AS (
INSERT INTO metering_usagetouch (customer_id, day, xid)
SELECT DISTINCT customer_id, (hour AT TIME ZONE 'UTC')::date, pg_current_xact_id()::text::bigint
FROM agg WHERE customer_id IS NOT NULL
ON CONFLICT (customer_id, day) DO UPDATE SET xid = EXCLUDED.xid
)
SELECT (SELECT coalesce(sum(event_count), 0) FROM agg)::bigint, (SELECT count(*) FROM upserted)
"""

_NEWER = (
    "(EXCLUDED.latest_time IS NOT NULL AND (b.latest_time IS NULL OR "
    "(EXCLUDED.latest_time, EXCLUDED.latest_event_id) > (b.latest_time, b.latest_event_id)))"
)

# Only a LATEST meter needs the latest value of each bucket; ordered aggregates are costly.
_LATEST = """max(s.time) FILTER (WHERE s.v IS NOT NULL) AS latest_time,
       (array_agg(s.v ORDER BY s.time DESC, s.id DESC) FILTER (WHERE s.v IS NOT NULL))[1] AS latest_value,
       (array_agg(s.id ORDER BY s.time DESC, s.id DESC) FILTER (WHERE s.v IS NOT NULL))[1] AS latest_event_id"""
_NO_LATEST = "NULL::timestamptz AS latest_time, NULL::numeric AS latest_value, NULL::bigint AS latest_event_id"

_UNIQUE_INSERT = """
INSERT INTO metering_uniquevalue (meter_id, customer_id, subject, hour, dims, value)
SELECT DISTINCT %(meter)s, m.customer_id, s.subject, s.hour, s.dims, s.u
FROM (
    SELECT e.subject, e.time, date_trunc('hour', e.time, 'UTC') AS hour, {dims} AS dims, {unique} AS u
    FROM metering_event e
    WHERE e.type = %(type)s AND {where}
    OFFSET 0
) s
LEFT JOIN customers_consumermapping m
       ON m.consumer_key = s.subject AND m.valid_from <= s.time
      AND (m.valid_to IS NULL OR s.time < m.valid_to)
WHERE s.u IS NOT NULL
ON CONFLICT DO NOTHING
"""


def _aggregate(cursor, meter: Meter, where: str, where_params: dict) -> tuple[int, int]:
    """Fold the meter's events matching ``where`` into its buckets; (events, buckets)."""
    params: dict = {}
    dims = sql.dims_expr(meter, params)
    is_unique = meter.aggregation == Aggregation.UNIQUE_COUNT
    # a unique count's values are text kept in UniqueValue, never numbers in the buckets
    value = "NULL::numeric" if is_unique else sql.value_expr(meter, params)
    unique = sql.unique_expr(meter, params) if is_unique else None
    latest = _LATEST if meter.aggregation == Aggregation.LATEST else _NO_LATEST
    params.update({"meter": meter.pk, "type": meter.event_type, **where_params})
    cursor.execute(
        _BUCKET_UPSERT.format(dims=dims, value=value, where=where, newer=_NEWER, latest=latest), params
    )
    events, buckets = cursor.fetchone()
    if unique is not None:
        cursor.execute(_UNIQUE_INSERT.format(dims=dims, unique=unique, where=where), params)
    return events, buckets


def _lock_state(cursor, meter: Meter) -> int:
    cursor.execute(
        "INSERT INTO metering_rollupstate (meter_id, watermark, events_rolled_up) VALUES (%s, 0, 0) "
        "ON CONFLICT DO NOTHING",
        [meter.pk],
    )
    cursor.execute(
        "SELECT watermark FROM metering_rollupstate WHERE meter_id = %s FOR UPDATE", [meter.pk]
    )
    return cursor.fetchone()[0]


def meter_rollup(*, meter: Meter, now: datetime) -> RollupResult:
    """Roll up every stored event of ``meter`` that is not yet in its buckets."""
    with transaction.atomic(), connection.cursor() as cursor:
        watermark = _lock_state(cursor, meter)
        cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        horizon = cursor.fetchone()[0]
        if horizon <= watermark:
            return RollupResult(meter=meter.key, events=0, buckets=0, watermark=watermark)
        events, buckets = _aggregate(
            cursor, meter, "e.xid >= %(lo)s AND e.xid < %(hi)s", {"lo": watermark, "hi": horizon}
        )
        RollupState.objects.filter(meter=meter).update(
            watermark=horizon, last_run_at=now, events_rolled_up=F("events_rolled_up") + events
        )
    return RollupResult(meter=meter.key, events=events, buckets=buckets, watermark=horizon)


def subject_reattribute(
    *, meter: Meter, subject: str, start: datetime, end: datetime | None
) -> int:
    """Rebuild ``subject``'s buckets of ``meter`` over the hours touching ``[start, end)``
    from the raw events already rolled up, so they follow the current consumer mappings.

    Events above the watermark are left to the next incremental run. Returns the number
    of events re-aggregated.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        watermark = _lock_state(cursor, meter)
        bounds = {
            "subject": subject,
            "start": start,
            "end": end,
            "wm": watermark,
            "meter": meter.pk,
        }
        hour_range = (
            "hour >= date_trunc('hour', %(start)s::timestamptz, 'UTC') "
            "AND (%(end)s::timestamptz IS NULL OR hour < %(end)s::timestamptz)"
        )
        # The customers whose usage moves away are touched too, so billing sees the change.
        cursor.execute(
            f"""
            WITH gone AS (
                DELETE FROM metering_usagebucket
                WHERE meter_id = %(meter)s AND subject = %(subject)s AND {hour_range}
                RETURNING customer_id, hour
            )
            INSERT INTO metering_usagetouch (customer_id, day, xid)
            SELECT DISTINCT customer_id, (hour AT TIME ZONE 'UTC')::date, pg_current_xact_id()::text::bigint
            FROM gone WHERE customer_id IS NOT NULL
            ON CONFLICT (customer_id, day) DO UPDATE SET xid = EXCLUDED.xid
            """,
            bounds,
        )
        cursor.execute(
            f"DELETE FROM metering_uniquevalue WHERE meter_id = %(meter)s AND subject = %(subject)s AND {hour_range}",
            bounds,
        )
        where = (
            "e.subject = %(subject)s AND e.xid < %(wm)s "
            "AND e.time >= date_trunc('hour', %(start)s::timestamptz, 'UTC') "
            "AND (%(end)s::timestamptz IS NULL OR e.time < date_trunc('hour', %(end)s::timestamptz, 'UTC') "
            "     + CASE WHEN date_trunc('hour', %(end)s::timestamptz, 'UTC') = %(end)s::timestamptz "
            "            THEN interval '0' ELSE interval '1 hour' END)"
        )
        events, _ = _aggregate(cursor, meter, where, bounds)
    return events
