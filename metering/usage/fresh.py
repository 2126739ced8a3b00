"""The hot path of usage: a feature's quantity for a group of customers over several
ranges, exact and fresh, in one statement, for the entitlement value check.

It answers what ``feature_usage`` answers (the reference it is tested against) for each
range, for additive meters (COUNT, SUM, AVG); other aggregations are answered by
``feature_usage`` itself. What makes it narrower is explained in ``feature_quantities``.

Per process it remembers the last watermark seen, the sums of whole past days and how
old the events not rolled up are (``metering.usage.memories``); the statement checks
each of them, so the answer never depends on them.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection
from psycopg import sql as psycopg_sql

from customers.models import ConsumerMapping
from metering import sql as meter_sql
from metering.models import Aggregation, Feature, Meter
from metering.usage.exact import feature_usage
from metering.usage.memories import (
    ZERO,
    AdditivePartial,
    LateEvents,
    late_events,
    past_days_known,
    past_days_remember,
    watermark_guess,
    watermark_seen,
)

# Aggregations whose partial results add up, so the narrow statement can answer them.
ADDITIVE = frozenset({Aggregation.COUNT, Aggregation.SUM, Aggregation.AVG})


@dataclass(frozen=True)
class ConsumerTerm:
    """A consumer key mapped to one of the customers over ``[valid_from, valid_to)``."""

    consumer_key: str
    valid_from: datetime
    valid_to: datetime | None


def consumer_terms(*, customer_ids: Iterable[int]) -> tuple[ConsumerTerm, ...]:
    """The gateway consumers mapped to these customers, at any time, by key and start:
    what ``feature_quantities`` finds their events by (one query)."""
    return tuple(
        ConsumerTerm(consumer_key=key, valid_from=valid_from, valid_to=valid_to)
        for key, valid_from, valid_to in ConsumerMapping.objects.filter(
            customer_id__in=list(customer_ids)
        )
        .order_by("consumer_key", "valid_from")
        .values_list("consumer_key", "valid_from", "valid_to")
    )


def _floor_day(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _filter_sql(filters: dict, group_by: dict, params: dict, *, bucket: bool) -> str:
    """The feature's dimension filters: on a bucket's ``dims``, or on an event's data
    read with the meter's group-by paths (a filter on a dimension the meter does not
    group by matches nothing, as in the buckets)."""
    if bucket:
        clauses = meter_sql.dims_filter(filters, meter_sql.binder(params), column="b.dims")
        return " AND ".join(clauses) or "TRUE"
    clauses = []
    for i, (name, values) in enumerate(sorted(filters.items())):
        if name in group_by:
            params[f"fv{i}"] = [str(v) for v in values]
            expr = meter_sql.text_expr(group_by[name], params, column="e.data")
            clauses.append(f"{expr} = ANY(%(fv{i})s)")
        else:
            clauses.append("FALSE")
    return " AND ".join(clauses) or "TRUE"


def _consumers_sql(
    consumers: Sequence[ConsumerTerm], start: datetime, end: datetime, params: dict, tag: str
) -> str:
    """Which events of ``[start, end)`` are the customers': those whose subject is one of
    their consumer keys at the event's time (at most one customer holds a key at any
    instant, so no event counts twice). A key held over the whole range needs no time
    test."""
    whole: list[str] = []
    windows: list[str] = []
    for j, term in enumerate(consumers):
        if term.valid_from >= end or (term.valid_to is not None and term.valid_to <= start):
            continue
        if term.valid_from <= start and (term.valid_to is None or term.valid_to >= end):
            whole.append(term.consumer_key)
            continue
        params[f"ck{tag}_{j}"] = term.consumer_key
        params[f"cf{tag}_{j}"] = term.valid_from
        clause = f"(e.subject = %(ck{tag}_{j})s AND e.time >= %(cf{tag}_{j})s"
        if term.valid_to is not None:
            params[f"ct{tag}_{j}"] = term.valid_to
            clause += f" AND e.time < %(ct{tag}_{j})s"
        windows.append(clause + ")")
    if whole:
        params[f"cw{tag}"] = sorted(set(whole))
        windows.insert(0, f"e.subject = ANY(%(cw{tag})s)")
    return "(" + " OR ".join(windows) + ")" if windows else "FALSE"


_NOTHING = '(SELECT NULL::bigint AS events, NULL::numeric AS total, NULL::bigint AS "values")'
# Whole hours from the buckets: the past days only when they must be summed again.
_BUCKETS = """(SELECT sum(b.event_count) FILTER (WHERE b.hour < %(day{i})s) AS past_events,
        sum(b.value_sum) FILTER (WHERE b.hour < %(day{i})s) AS past_total,
        sum(b.value_count) FILTER (WHERE b.hour < %(day{i})s) AS past_values,
        sum(b.event_count) FILTER (WHERE b.hour >= %(day{i})s) AS events,
        sum(b.value_sum) FILTER (WHERE b.hour >= %(day{i})s) AS total,
        sum(b.value_count) FILTER (WHERE b.hour >= %(day{i})s) AS "values"
    FROM metering_usagebucket b
    WHERE b.meter_id = %(meter)s AND b.customer_id = ANY(%(customers)s)
      AND b.hour >= CASE WHEN recount.r THEN %(inner_start{i})s ELSE %(day{i})s END
      AND b.hour < %(inner_end{i})s AND {bucket_filter})"""
_NO_BUCKETS = (
    "(SELECT NULL::numeric AS past_events, NULL::numeric AS past_total, "
    "NULL::numeric AS past_values, NULL::numeric AS events, NULL::numeric AS total, "
    'NULL::numeric AS "values")'
)
_RAW = """(SELECT count(*) AS events, sum(r.v) AS total, count(r.v) AS "values" FROM (
        SELECT {value} AS v FROM metering_event e
        WHERE e.type = %(type)s AND {when} AND {consumers} AND {raw_filter}
    ) r)"""
_TOUCHED = """EXISTS (SELECT 1 FROM metering_usagetouch t
        WHERE t.customer_id = ANY(%(customers)s) AND t.xid >= %(xmin{i})s
          AND t.day >= (%(inner_start{i})s AT TIME ZONE 'UTC')::date
          AND t.day < (%(day{i})s AT TIME ZONE 'UTC')::date)"""
# One row per range. The past days' check is read once (OFFSET 0 keeps the planner from
# copying it) and decides where the bucket scan starts. The raw events (the partial hours
# at the edges, and the events not rolled up) are one scan: PostgreSQL ORs the index on
# (subject, time) for the edges with the index on xid for the rest.
_RANGE = """SELECT {i} AS n, recount.r AS recounted,
    b.past_events, b.past_total, b.past_values, b.events, b.total, b."values",
    raw.events, raw.total, raw."values",
    (SELECT coalesce((SELECT watermark FROM metering_rollupstate WHERE meter_id = %(meter)s), 0)),
    pg_snapshot_xmin(pg_current_snapshot())::text::bigint
FROM (SELECT {recount} AS r OFFSET 0) recount
CROSS JOIN LATERAL {buckets} b, {raw} raw"""


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@functools.lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    """A string as an SQL literal, quoted by the driver as its client-side binding does
    (the same strings come back with every check: consumer keys, event types, filters)."""
    connection.ensure_connection()
    return psycopg_sql.Literal(text).as_string(connection.connection)


def _literal(value) -> str | None:
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, list) and value:
        if all(type(v) is int for v in value):
            return "'{" + ",".join(map(str, value)) + "}'::bigint[]"
        if all(isinstance(v, str) for v in value):
            return "ARRAY[" + ",".join(_quoted(v) for v in value) + "]"
    return None


def _inline(sql: str, params: dict) -> tuple[str, dict | None]:
    """The statement with its parameters written in as literals, as the driver's
    client-side binding (Django's default) would, but each value once and the same
    strings quoted once per process: this halves the statement's client CPU. Values of
    other types are left to the driver."""
    rendered = {name: _literal(value) for name, value in params.items()}
    sql = _PLACEHOLDER.sub(lambda m: rendered.get(m.group(1)) or m.group(0), sql)
    left = {name: value for name, value in params.items() if rendered[name] is None}
    return sql, left or None


def _partial(events, total, values) -> AdditivePartial:
    return AdditivePartial(int(events or 0), total if total is not None else ZERO, int(values or 0))


def feature_quantities(
    *,
    feature: Feature,
    customer_ids: Iterable[int],
    ranges: Sequence[tuple[datetime, datetime]],
    consumers: Sequence[ConsumerTerm] | None = None,
) -> list[Decimal]:
    """The feature's quantity over each ``[start, end)`` in ``ranges`` for the group of
    customers, exact and fresh (events accepted a moment ago count, rolled up or not):
    for each range, what ``feature_usage(...).quantity`` answers. ``consumers`` are the
    customers' ``consumer_terms`` when the caller holds them already (the value check
    caches them); read here otherwise. ``feature.meter`` should be loaded.

    For additive meters (COUNT, SUM, AVG) one statement answers every range (run again,
    rarely, when a rollup moved the watermark between the guess and the statement); the
    other aggregations are answered by ``feature_usage``, one range at a time.

    Like ``feature_usage``, whole UTC hours come from the buckets and the rest from raw
    events: the partial hours at the edges, and the events not rolled up yet (``xid`` at
    or above the watermark). What makes it narrower:

    - the events are found by the customers' consumer keys instead of a join with the
      mappings: less to plan;
    - the watermark is passed as a literal (the last one seen), so PostgreSQL finds the
      events not rolled up through the index on ``xid`` instead of reading every event of
      the period; the statement also reads the real watermark, in the same snapshot, and
      is run again with it when the guess was wrong, so the answer is always exact;
    - the buckets of whole past UTC days are summed once per process and kept with the
      transaction horizon of that sum; each statement sums them again only when
      ``metering_usagetouch`` shows that a rollup or a re-attribution changed those days
      since (every writer of buckets stamps the customers and days it changed with its
      own transaction id there). Today's buckets are always summed.
    """
    ranges = list(ranges)
    ids = sorted(set(customer_ids))
    if not ranges:
        return []
    meter = feature.meter
    if meter.aggregation not in ADDITIVE:
        return _usage_generic(feature=feature, customer_ids=ids, ranges=ranges)
    if consumers is None:
        consumers = consumer_terms(customer_ids=ids)
    for _ in range(3):
        guess = watermark_guess(meter)
        statement = _Statement(feature, ids, consumers, guess, late_events(meter, guess))
        sql, left = _inline(statement.sql(ranges), statement.params)
        with connection.cursor() as cursor:
            cursor.execute(sql, left)
            rows = cursor.fetchall()
        watermark = rows[0][11]
        watermark_seen(meter, watermark)
        if watermark != guess:
            continue  # a rollup ran in between: the raw part counted the wrong events
        return _quantities(rows, statement.past_keys, meter.aggregation)
    return _usage_generic(feature=feature, customer_ids=ids, ranges=ranges)


class _Statement:
    """The one statement of ``feature_quantities``: a row per range, its parameters in
    ``params``, and per range the key and the remembered sum of its past days."""

    def __init__(
        self,
        feature: Feature,
        ids: list[int],
        consumers: Sequence[ConsumerTerm],
        guess: int,
        late: LateEvents,
    ) -> None:
        meter: Meter = feature.meter
        filters = feature.filters or {}
        group_by = meter.group_by or {}
        self.meter = meter
        self.ids = ids
        self.consumers = consumers
        self.guess = guess
        self.late = late
        self.filters_key = json.dumps(filters, sort_keys=True)
        self.params: dict = {"meter": meter.pk, "type": meter.event_type, "customers": ids}
        self.value = meter_sql.value_expr(meter, self.params, column="e.data")
        self.bucket_filter = _filter_sql(filters, group_by, self.params, bucket=True)
        self.raw_filter = _filter_sql(filters, group_by, self.params, bucket=False)
        self.past_keys: list[tuple[tuple, tuple[AdditivePartial, int] | None]] = []

    def sql(self, ranges: Sequence[tuple[datetime, datetime]]) -> str:
        selects = [self._range(i, start, end) for i, (start, end) in enumerate(ranges)]
        return "\nUNION ALL\n".join(selects) + "\nORDER BY n"

    def _range(self, i: int, start: datetime, end: datetime) -> str:
        """The row of ``[start, end)``: whole hours from the buckets, the rest raw; parts
        that are empty by their bounds are left out (less to plan)."""
        inner_start, inner_end = meter_sql.whole_hours(start, end)
        day = max(inner_start, min(inner_end, _floor_day(inner_end)))
        self.params.update(
            {
                f"start{i}": start,
                f"end{i}": end,
                f"inner_start{i}": inner_start,
                f"inner_end{i}": inner_end,
                f"day{i}": day,
            }
        )
        recount = self._past_days_recount(i, inner_start, day)
        by_consumer = _consumers_sql(self.consumers, start, end, self.params, str(i))
        when = self._raw_times(i, start, end, inner_start, inner_end)
        return _RANGE.format(
            i=i,
            recount=recount,
            buckets=_BUCKETS.format(i=i, bucket_filter=self.bucket_filter)
            if inner_end > inner_start
            else _NO_BUCKETS,
            raw=_RAW.format(
                value=self.value,
                when="(" + " OR ".join(when) + ")",
                consumers=by_consumer,
                raw_filter=self.raw_filter,
            )
            if when and by_consumer != "FALSE"
            else _NOTHING,
        )

    def _past_days_recount(self, i: int, inner_start: datetime, day: datetime) -> str:
        """Whether the range's whole past days are summed again: never when it has none,
        always when no sum of them is remembered, else when ``metering_usagetouch`` shows
        a change since the remembered sum's horizon."""
        key = (self.meter.pk, self.filters_key, tuple(self.ids), inner_start, day)
        known = past_days_known(key) if day > inner_start else None
        if day <= inner_start:
            recount = "FALSE"
        elif known is None:
            recount = "TRUE"
        else:
            self.params[f"xmin{i}"] = known[1]
            recount = _TOUCHED.format(i=i)
        self.past_keys.append((key, known))
        return recount

    def _raw_times(
        self, i: int, start: datetime, end: datetime, inner_start: datetime, inner_end: datetime
    ) -> list[str]:
        """Which raw events the range reads: the partial hours at the edges, by time..."""
        when = [
            f"(e.time >= %({lo}{i})s AND e.time < %({hi}{i})s)"
            for lo, hi, present in (
                ("start", "inner_start", inner_start > start),
                ("inner_end", "end", end > inner_end),
            )
            if present
        ]
        # ...and, inside the whole hours, those not rolled up: all of them from the
        # watermark on, or only those from the horizon of the late-events reading on
        # when it shows that none before it falls inside these hours
        if inner_end > inner_start:
            late = self.late
            self.params[f"fx{i}"] = (
                max(self.guess, late.horizon)
                if late.earliest is None or late.earliest >= inner_end
                else self.guess
            )
            when.append(
                f"(e.time >= %(inner_start{i})s AND e.time < %(inner_end{i})s "
                f"AND e.xid >= %(fx{i})s)"
            )
        return when


def _quantities(
    rows: list[tuple],
    past_keys: list[tuple[tuple, tuple[AdditivePartial, int] | None]],
    aggregation: str,
) -> list[Decimal]:
    """Each range's quantity from its row: the past days (summed again, then remembered,
    or as remembered), today's whole hours and the raw events."""
    quantities = []
    for row, (key, known) in zip(rows, past_keys, strict=True):
        if row[1]:  # the past days were summed again
            past = _partial(*row[2:5])
            past_days_remember(key, (past, row[12]))
        else:
            past = known[0] if known is not None else AdditivePartial()
        total = past + _partial(*row[5:8]) + _partial(*row[8:11])
        quantities.append(total.quantity(aggregation))
    return quantities


def _usage_generic(
    *, feature: Feature, customer_ids: Sequence[int], ranges: list[tuple[datetime, datetime]]
) -> list[Decimal]:
    return [
        feature_usage(feature=feature, customer_ids=customer_ids, start=s, end=e).quantity
        for s, e in ranges
    ]
