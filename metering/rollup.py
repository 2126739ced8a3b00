"""Incremental rollup of raw events into hourly usage buckets, with set-based SQL.

Each meter has a watermark: a transaction id below which every event is in its buckets.
A run locks the meter's watermark row, takes ``pg_snapshot_xmin`` of its own snapshot as
the new horizon (every transaction below it has finished, so no event with a lower id
can still appear), aggregates the events stamped in ``[watermark, horizon)`` into a
temporary table with one GROUP BY, folds that into the buckets with one upsert (a plain
INSERT on a meter's first run), and moves the watermark, all in one transaction. Re-running is
harmless and two workers serialise on the row lock, so an event is counted exactly once;
an ingest transaction that commits late is simply picked up by the next run.

One meter's failure never stops the others (``meters_rollup``). A meter whose rollup
raises is rolled back as a whole (its watermark does not move, so nothing is lost and
nothing is counted twice) and tried again at once, without the events its buckets cannot
hold: those are found (``metering.refusals``), recorded as refused with their reason,
and left out of its buckets for good, while every other event of the meter is counted.
When that is not enough (the meter's own definition fails, or no single event is to
blame), the meter is recorded as failing (``RollupFailure``), shown on the dashboard,
and tried again on the next run; the run that succeeds deletes the record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F

from metering import refusals, sql
from metering.models import Aggregation, Meter, RollupFailure, RollupState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RollupResult:
    meter: str
    events: int
    buckets: int
    watermark: int
    refused: int = 0  # events refused by this run (left out of the buckets, recorded)
    error: str = ""  # the meter failed: its watermark did not move (see RollupFailure)


# One GROUP BY over the events into a temporary table (no WAL, no index); the buckets
# and the touched days are then written from it, so the events are read once per run, a
# UNIQUE_COUNT meter's distinct values included.
_AGGREGATE = """
CREATE TEMPORARY TABLE metering_rollup_agg ON COMMIT DROP AS
SELECT m.customer_id, s.subject, s.hour, {dims} AS dims,
       count(*) AS event_count, {values},
       {latest},
       min(s.time) AS first_time, max(s.time) AS last_time,
       {unique_values} AS unique_values
FROM (
    SELECT e.id, e.subject, e.time, date_trunc('hour', e.time, 'UTC') AS hour,
           {dim_columns}{value} AS v, {unique} AS u
    FROM metering_event e
    WHERE e.type = %(type)s AND {where}
) s
LEFT JOIN customers_consumermapping m
       ON m.consumer_key = s.subject AND m.valid_from <= s.time
      AND (m.valid_to IS NULL OR s.time < m.valid_to)
GROUP BY m.customer_id, s.subject, s.hour{dim_groups}
-- identity order: the buckets are written in it, each index page visited once
ORDER BY m.customer_id, s.hour, s.subject
"""

_BUCKET_WRITE = """
INSERT INTO metering_usagebucket AS b (
    meter_id, customer_id, subject, hour, dims, event_count, value_count, value_sum,
    value_min, value_max, latest_time, latest_value, latest_event_id, first_time, last_time,
    unique_values
)
SELECT %(meter)s, customer_id, subject, hour, dims, event_count, value_count, value_sum,
       value_min, value_max, latest_time, latest_value, latest_event_id, first_time, last_time,
       unique_values
FROM metering_rollup_agg  -- read back in the order written: identity order
{on_conflict}
"""

# An update sets only what the meter's aggregation keeps: the other columns hold the same
# constants on both sides (a meter's aggregation never changes once it has buckets).
_ON_CONFLICT = """
ON CONFLICT (meter_id, customer_id, hour, subject, dims) DO UPDATE SET
    event_count = b.event_count + EXCLUDED.event_count,
    first_time = LEAST(b.first_time, EXCLUDED.first_time),
    last_time = GREATEST(b.last_time, EXCLUDED.last_time){more}
"""
_SET_VALUES = """,
    value_count = b.value_count + EXCLUDED.value_count,
    value_sum = b.value_sum + EXCLUDED.value_sum,
    value_min = LEAST(b.value_min, EXCLUDED.value_min),
    value_max = GREATEST(b.value_max, EXCLUDED.value_max)"""
_SET_LATEST = """,
    latest_time = CASE WHEN {newer} THEN EXCLUDED.latest_time ELSE b.latest_time END,
    latest_value = CASE WHEN {newer} THEN EXCLUDED.latest_value ELSE b.latest_value END,
    latest_event_id = CASE WHEN {newer} THEN EXCLUDED.latest_event_id ELSE b.latest_event_id END"""
# Distinct values merge as sets; both sides are sorted and distinct already. When the new
# values are all there already (often: an hour's users come back), the array is kept as
# it is, without unnesting and sorting it again.
_SET_UNIQUE = """,
    unique_values = CASE
        WHEN EXCLUDED.unique_values IS NULL THEN b.unique_values
        WHEN b.unique_values IS NULL THEN EXCLUDED.unique_values
        WHEN EXCLUDED.unique_values <@ b.unique_values THEN b.unique_values
        ELSE ARRAY(SELECT DISTINCT v FROM unnest(b.unique_values || EXCLUDED.unique_values) AS v ORDER BY v)
    END"""

# In (customer, day) order: meters rolled up at once (``meters_rollup``) touch the same
# rows, and taking their locks in one order keeps them from deadlocking.
_TOUCH = """
INSERT INTO metering_usagetouch (customer_id, day, xid)
SELECT customer_id, day, pg_current_xact_id()::text::bigint
FROM (SELECT DISTINCT customer_id, (hour AT TIME ZONE 'UTC')::date AS day
      FROM metering_rollup_agg WHERE customer_id IS NOT NULL) t
ORDER BY customer_id, day
ON CONFLICT (customer_id, day) DO UPDATE SET xid = EXCLUDED.xid
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
_VALUES = """count(s.v) AS value_count, coalesce(sum(s.v), 0) AS value_sum,
       min(s.v) AS value_min, max(s.v) AS value_max"""
# COUNT and UNIQUE_COUNT have no numeric value: what the aggregates would give, as constants.
_NO_VALUES = (
    "0::bigint AS value_count, 0::numeric AS value_sum, "
    "NULL::numeric AS value_min, NULL::numeric AS value_max"
)
_UNIQUE_VALUES = "array_agg(DISTINCT s.u ORDER BY s.u) FILTER (WHERE s.u IS NOT NULL)"


def _aggregate(
    cursor,
    meter: Meter,
    where: str,
    where_params: dict,
    *,
    first_run: bool = False,
    refused: Sequence[int] = (),
) -> tuple[int, int]:
    """Fold the meter's events matching ``where`` into its buckets; (events, buckets).

    Runs inside the caller's transaction, which holds the meter's watermark lock: nothing
    else writes the meter's buckets meanwhile. ``first_run`` (the watermark is still 0)
    lets a meter without any bucket take a plain INSERT. The events whose ids are in
    ``refused`` are left out (the condition is only there when there are some).
    """
    if refused:
        where = f"{where} AND NOT (e.id = ANY(%(refused)s))"
        where_params = {**where_params, "refused": list(refused)}
    params: dict = {}
    aggregate = _aggregate_sql(meter, where, params)
    params.update({"meter": meter.pk, "type": meter.event_type, **where_params})
    cursor.execute(aggregate, params)
    cursor.execute("SELECT coalesce(sum(event_count), 0)::bigint FROM metering_rollup_agg")
    events = cursor.fetchone()[0]
    # A meter without buckets yet (a catch-up from scratch) takes a plain INSERT, which
    # skips the speculative insertion of ON CONFLICT: no bucket can conflict while the
    # watermark lock is held, and the identity constraint would refuse a duplicate
    # rather than count it twice.
    empty = False
    if first_run:
        cursor.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM metering_usagebucket WHERE meter_id = %s)", [meter.pk]
        )
        empty = cursor.fetchone()[0]
    on_conflict = "" if empty else _on_conflict(meter)
    cursor.execute(_BUCKET_WRITE.format(on_conflict=on_conflict), params)
    buckets = cursor.rowcount
    cursor.execute(_TOUCH)
    cursor.execute("DROP TABLE metering_rollup_agg")
    return events, buckets


def _aggregate_sql(meter: Meter, where: str, params: dict) -> str:
    """The GROUP BY of the meter's events matching ``where`` into the temporary table:
    its dimensions, value and distinct values as expressions, their parameters bound
    into ``params``."""
    # grouped by the dimensions' text values; the jsonb is built once per bucket
    columns = sql.dims_columns(meter, params)
    dims = "'{}'::jsonb"
    if columns:
        dims = (
            "jsonb_build_object("
            + ", ".join(f"{name}::text, s.d{i}" for i, (name, _) in enumerate(columns))
            + ")"
        )
    is_unique = meter.aggregation == Aggregation.UNIQUE_COUNT
    # a unique count's values are text kept in the bucket's unique_values, never numbers
    value = "NULL::numeric" if is_unique else sql.value_expr(meter, params)
    unique = sql.unique_expr(meter, params) if is_unique else "NULL::text"
    # Without a fence the planner pulls the subquery up and inlines the value's expression
    # into each aggregate that names it: metering_numeric ran four times per event, and
    # the GROUP BY's sort carried every event's whole JSON to evaluate it after sorting.
    # metering_fence (migration 0006) is VOLATILE, so the subquery stays a subquery and
    # its values are computed once per event, below the sort; unlike OFFSET 0 it leaves
    # the plan free to use parallel workers (measured, see docs/performance.md).
    if value != "NULL::numeric":
        value = f"metering_fence({value})"
    if unique != "NULL::text":
        unique = f"metering_fence({unique})"
    return _AGGREGATE.format(
        dims=dims,
        dim_columns="".join(f"{expr} AS d{i}, " for i, (_, expr) in enumerate(columns)),
        dim_groups="".join(f", s.d{i}" for i in range(len(columns))),
        values=_VALUES if _has_value(meter) else _NO_VALUES,
        value=value,
        unique=unique,
        where=where,
        latest=_LATEST if meter.aggregation == Aggregation.LATEST else _NO_LATEST,
        unique_values=_UNIQUE_VALUES if is_unique else "NULL::text[]",
    )


def _on_conflict(meter: Meter) -> str:
    """The upsert's ON CONFLICT clause: it sets only what the meter's aggregation keeps."""
    more = (
        (_SET_VALUES if _has_value(meter) else "")
        + (_SET_LATEST.format(newer=_NEWER) if meter.aggregation == Aggregation.LATEST else "")
        + (_SET_UNIQUE if meter.aggregation == Aggregation.UNIQUE_COUNT else "")
    )
    return _ON_CONFLICT.format(more=more)


def _has_value(meter: Meter) -> bool:
    """Whether the meter's aggregation reads a number from each event (not a count)."""
    return meter.aggregation not in (Aggregation.COUNT, Aggregation.UNIQUE_COUNT)


def watermark_lock(cursor, meter: Meter) -> int:
    """Lock ``meter``'s watermark row (creating it at 0) until the transaction ends, and
    return the watermark: while it is held, no rollup writes the meter's buckets."""
    cursor.execute(
        "INSERT INTO metering_rollupstate (meter_id, watermark, events_rolled_up) VALUES (%s, 0, 0) "
        "ON CONFLICT DO NOTHING",
        [meter.pk],
    )
    cursor.execute(
        "SELECT watermark FROM metering_rollupstate WHERE meter_id = %s FOR UPDATE", [meter.pk]
    )
    return cursor.fetchone()[0]


def _horizon(cursor) -> int:
    cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    return cursor.fetchone()[0]


def _refused_ids(cursor, meter: Meter, where: str, params: list) -> list[int]:
    """Ids of the events ``meter`` refused, among those matching ``where``: one indexed
    read per run, normally empty (refused events sit below the watermark once the run
    that refused them commits)."""
    cursor.execute(
        f"SELECT event_pk FROM metering_refusedevent WHERE meter_id = %s AND {where}",
        [meter.pk, *params],
    )
    return [row[0] for row in cursor.fetchall()]


def _roll(cursor, meter: Meter, now: datetime, watermark: int, horizon: int) -> RollupResult:
    """Fold ``[watermark, horizon)`` into the buckets and move the watermark; the caller
    holds the watermark lock. A success also ends the meter's recorded failure."""
    refused = _refused_ids(cursor, meter, "xid >= %s AND xid < %s", [watermark, horizon])
    events, buckets = _aggregate(
        cursor,
        meter,
        "e.xid >= %(lo)s AND e.xid < %(hi)s",
        {"lo": watermark, "hi": horizon},
        first_run=watermark == 0,
        refused=refused,
    )
    RollupState.objects.filter(meter=meter).update(
        watermark=horizon, last_run_at=now, events_rolled_up=F("events_rolled_up") + events
    )
    cursor.execute(
        "DELETE FROM metering_rollupfailure WHERE meter_id = %s AND stage = %s",
        [meter.pk, RollupFailure.Stage.ROLLUP],
    )
    return RollupResult(meter=meter.key, events=events, buckets=buckets, watermark=horizon)


def meter_rollup(*, meter: Meter, now: datetime) -> RollupResult:
    """Roll up every stored event of ``meter`` that is not yet in its buckets (but the
    events it refused). Raises what the database raises, and then changes nothing;
    ``meters_rollup`` isolates failures (``meter_rollup_recover``)."""
    with transaction.atomic(), connection.cursor() as cursor:
        watermark = watermark_lock(cursor, meter)
        horizon = _horizon(cursor)
        if horizon <= watermark:
            return RollupResult(meter=meter.key, events=0, buckets=0, watermark=watermark)
        return _roll(cursor, meter, now, watermark, horizon)


def meter_rollup_recover(*, meter: Meter, now: datetime, error: Exception) -> RollupResult:
    """After ``meter_rollup`` raised ``error``: roll the meter up without the events its
    buckets cannot hold, refusing them (recorded with their reason); or, when the meter
    still fails, record the failure (``RollupFailure``: the error and the events found
    to cause it) and leave its watermark where it was. Never raises: whatever goes
    wrong is logged and recorded, and the next run tries again."""
    message = refusals.error_text(error)
    logger.warning("Rollup of meter %s failed: %s", meter.key, message)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            watermark = watermark_lock(cursor, meter)
            horizon = _horizon(cursor)
            if horizon <= watermark:  # another worker rolled it up meanwhile
                return RollupResult(meter=meter.key, events=0, buckets=0, watermark=watermark)
            offenders: list[refusals.Offender] = []
            problems = sql.meter_path_problems(meter)
            if problems:  # the meter's own definition fails, whatever the events hold
                message = " ".join(m for ms in problems.values() for m in ms)
            elif refusals.is_data_error(error):  # not a timeout, a deadlock, a lost connection
                already = _refused_ids(
                    cursor, meter, "xid >= %s AND xid < %s", [watermark, horizon]
                )
                offenders = refusals.offending_events(
                    cursor, meter=meter, lo=watermark, hi=horizon, refused=already
                )
            if offenders:
                refusals.events_refuse(
                    cursor, meter=meter, offenders=offenders, lo=watermark, hi=horizon, now=now
                )
                try:
                    with transaction.atomic():
                        result = _roll(cursor, meter, now, watermark, horizon)
                except DatabaseError as again:  # more to it than these events
                    message = refusals.error_text(again)
                else:
                    logger.warning(
                        "Meter %s refused %d event(s) its buckets cannot hold, ids %s",
                        meter.key,
                        len(offenders),
                        [o.pk for o in offenders[:10]],
                    )
                    return replace(result, refused=len(offenders))
            # Halted until a run succeeds. The refusals found (if any) stay: those events
            # cannot be held in any case, and the next run need not look for them again.
            refusals.failure_record(
                meter=meter,
                stage=RollupFailure.Stage.ROLLUP,
                error=message,
                event_ids=[o.pk for o in offenders],
                now=now,
            )
            logger.error("Rollup of meter %s is halted: %s", meter.key, message)
            return RollupResult(
                meter=meter.key,
                events=0,
                buckets=0,
                watermark=watermark,
                refused=len(offenders),
                error=message,
            )
    except Exception as exc:  # the recovery itself failed: record what can be recorded
        logger.exception("Could not recover the rollup of meter %s", meter.key)
        message = f"{message} (then, while recovering: {refusals.error_text(exc)})"
        try:
            refusals.failure_record(
                meter=meter, stage=RollupFailure.Stage.ROLLUP, error=message, now=now
            )
        except Exception:
            logger.exception("Could not record the rollup failure of meter %s", meter.key)
        # the watermark is unknown here (-1); it did not move
        return RollupResult(meter=meter.key, events=0, buckets=0, watermark=-1, error=message)


def _meter_rollup_isolated(meter: Meter, now: datetime) -> RollupResult:
    try:
        return meter_rollup(meter=meter, now=now)
    except Exception as exc:  # one meter's failure is its own: see meter_rollup_recover
        return meter_rollup_recover(meter=meter, now=now, error=exc)


def meters_rollup(*, meters: list[Meter], now: datetime) -> list[RollupResult]:
    """``meter_rollup`` for each of ``meters``, ``METERING_ROLLUP_WORKERS`` at a time, each
    on its own database connection: a meter's rollup is independent of the others' (its
    own watermark lock, buckets and temporary table), so a catch-up uses the server's
    cores as a plain parallel GROUP BY would. Inside a transaction (whose snapshot other
    connections cannot share) they run one after the other here, each in a savepoint.

    A meter that fails does not stop the others: it is recovered or recorded
    (``meter_rollup_recover``), and its result carries the error; this never raises
    for one meter's failure."""
    workers = min(getattr(settings, "METERING_ROLLUP_WORKERS", 1), len(meters))
    if workers <= 1 or connection.in_atomic_block:
        return [_meter_rollup_isolated(meter, now) for meter in meters]

    def one(meter: Meter) -> RollupResult:
        try:
            return _meter_rollup_isolated(meter, now)
        finally:
            connection.close()  # this thread's own connection

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rollup") as pool:
        return list(pool.map(one, meters))


def subject_reattribute(
    *, meter: Meter, subject: str, start: datetime, end: datetime | None
) -> int:
    """Rebuild ``subject``'s buckets of ``meter`` over the hours touching ``[start, end)``
    from the raw events already rolled up, so they follow the current consumer mappings.

    Events above the watermark are left to the next incremental run. Returns the number
    of events re-aggregated.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        watermark = watermark_lock(cursor, meter)
        if watermark == 0:  # nothing rolled up, so no bucket to rebuild
            return 0
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
        where = (
            "e.subject = %(subject)s AND e.xid < %(wm)s "
            "AND e.time >= date_trunc('hour', %(start)s::timestamptz, 'UTC') "
            "AND (%(end)s::timestamptz IS NULL OR e.time < date_trunc('hour', %(end)s::timestamptz, 'UTC') "
            "     + CASE WHEN date_trunc('hour', %(end)s::timestamptz, 'UTC') = %(end)s::timestamptz "
            "            THEN interval '0' ELSE interval '1 hour' END)"
        )
        refused = _refused_ids(cursor, meter, "subject = %s AND xid < %s", [subject, watermark])
        events, _ = _aggregate(cursor, meter, where, bounds, refused=refused)
    return events
