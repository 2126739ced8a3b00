"""The hot path of usage: a feature's quantity for a group of customers over several
ranges, exact and fresh, in one statement, for the entitlement value check.

It answers what ``feature_usage`` answers (the reference it is tested against) for each
range, for additive meters (COUNT, SUM, AVG); other aggregations are answered by
``feature_usage`` itself. What makes it narrower is explained in ``feature_quantities``.

Per process it keeps the last rollup watermark seen per meter (a guess that each
statement checks), the bucket sums of whole past UTC days per range (checked against
``metering_usagetouch`` by each statement; shared through the cache so that a range is
summed once, not once per process), and how old the events not rolled up are (see
``_LateEvents``). None of them is ever trusted unchecked or beyond what it proves, so
none needs invalidating.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
import time as time_module
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from time import monotonic as time_monotonic

from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connection
from psycopg import sql as psycopg_sql

from customers.models import ConsumerMapping
from metering import sql as meter_sql
from metering.models import Aggregation, Feature
from metering.usage.exact import feature_usage

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
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


@dataclass(frozen=True)
class _Partial:
    """What an additive answer needs: events, the sum of values, how many had one."""

    events: int = 0
    total: Decimal = ZERO
    values: int = 0

    def __add__(self, other: _Partial) -> _Partial:
        return _Partial(
            self.events + other.events, self.total + other.total, self.values + other.values
        )

    def quantity(self, aggregation: str) -> Decimal:
        if aggregation == Aggregation.COUNT:
            return Decimal(self.events)
        if aggregation == Aggregation.SUM:
            return self.total
        return self.total / self.values if self.values else ZERO  # AVG


# Per process (see the module's docstring).
_watermarks: dict[int, int] = {}
_past_days: dict[tuple, tuple[_Partial, int]] = {}
_PAST_DAYS_MAX = 20_000
_lock = threading.Lock()

PAST_DAYS_SECONDS = 2 * 24 * 3600
# Moved only by a migrate or a flush (a database emptied or made anew, whose ids start
# over): part of the key of the past days' sums, which no catalog change affects.
DATABASE_GENERATION_KEY = "metering:usage:database-generation"


def _generation_key() -> str:
    # One cache may serve several databases (tests, benchmarks, development).
    return f"{DATABASE_GENERATION_KEY}:{connection.settings_dict['NAME']}"


def _database_generation() -> int:
    """Created on first use from the clock, so a key lost from the cache never comes back
    with a number it had before."""
    key = _generation_key()
    current = cache.get(key)
    if current is None:
        cache.add(key, time_module.time_ns(), timeout=None)
        current = cache.get(key)
    return int(current)


def database_generation_bump(*, using: str = DEFAULT_DB_ALIAS, **_kwargs) -> None:
    """After a migrate or a flush: past days' sums remembered in the cache are for ids
    that may now mean other rows (``post_migrate`` receiver, see ``MeteringConfig``)."""
    if using != DEFAULT_DB_ALIAS:
        return
    key = _generation_key()
    try:
        cache.incr(key)
    except ValueError:  # not there (yet, or any more): start it afresh
        cache.add(key, time_module.time_ns(), timeout=None)


def database_generation_bump_after_migrate(
    sender, using: str = DEFAULT_DB_ALIAS, **_kwargs
) -> None:
    """``post_migrate`` receiver: ``database_generation_bump``, without needing the cache
    to be up (a migrate must not)."""
    try:
        database_generation_bump(using=using)
    except Exception:  # noqa: BLE001
        logger.warning("Could not move the usage memories' database generation after migrate")


def usage_memories_clear() -> None:
    """Forget this process's memories (tests): the answers never depend on them."""
    with _lock:
        _watermarks.clear()
        _past_days.clear()
        _late.clear()


def _past_days_cache_key(key: tuple) -> str:
    meter_pk, filters_key, ids, inner_start, day = key
    digest = hashlib.sha256(f"{filters_key}|{ids}".encode()).hexdigest()[:24]
    # the database's generation: after a flush or a new database, ids start over
    return (
        f"metering:usage:past-days:v1:{connection.settings_dict['NAME']}:"
        f"{_database_generation()}:{meter_pk}:{digest}:"
        f"{int(inner_start.timestamp())}:{int(day.timestamp())}"
    )


def _past_days_known(key: tuple) -> tuple[_Partial, int] | None:
    """A sum of past days' buckets with its horizon: from this process, else from the cache
    (another process summed it), else None. Whichever it is, the statement checks it."""
    known = _past_days.get(key)
    if known is None:
        known = cache.get(_past_days_cache_key(key))
        if known is not None:
            with _lock:
                _past_days[key] = known
    return known


def _past_days_remember(key: tuple, known: tuple[_Partial, int]) -> None:
    with _lock:
        if len(_past_days) >= _PAST_DAYS_MAX:
            _past_days.clear()
        _past_days[key] = known
    cache.set(_past_days_cache_key(key), known, timeout=PAST_DAYS_SECONDS)


@dataclass(frozen=True)
class _LateEvents:
    """Of a meter's events with ``watermark <= xid < horizon`` (all of them committed or
    aborted for good: ``horizon`` was the snapshot's xmin), the earliest ``time``.

    Events not rolled up usually arrived a moment ago and carry a recent time: they lie
    in the partial hour at the end of a check's range, which is read by time anyway. A
    check whose whole hours end at or before ``earliest`` then needs only the events
    from ``horizon`` on, found through the index on ``xid``: a few, instead of the whole
    backlog of events not rolled up."""

    watermark: int
    horizon: int
    earliest: datetime | None  # None: there were none
    taken: float  # time.monotonic()


_late: dict[int, _LateEvents] = {}
LATE_EVENTS_SECONDS = 1.0  # how long one reading is used before the next


def _late_events(meter, watermark: int) -> _LateEvents:
    """The current reading for ``meter`` at ``watermark`` (taken again after a second,
    or when the watermark is behind it)."""
    late = _late.get(meter.pk)
    if (
        late is not None
        and late.watermark <= watermark
        and time_monotonic() - late.taken < LATE_EVENTS_SECONDS
    ):
        return late
    with connection.cursor() as cursor:
        # OFFSET 0: read the few events through the index on xid, never min() through
        # the index on time (which would walk every rolled-up event first)
        cursor.execute(
            "SELECT (SELECT min(x.time) FROM (SELECT e.time FROM metering_event e "
            "WHERE e.type = %s AND e.xid >= %s OFFSET 0) x), "
            "pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            [meter.event_type, watermark],
        )
        earliest, horizon = cursor.fetchone()
    late = _LateEvents(watermark, horizon, earliest, time_monotonic())
    _late[meter.pk] = late
    return late


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


def _partial(events, total, values) -> _Partial:
    return _Partial(int(events or 0), total if total is not None else ZERO, int(values or 0))


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
    filters = feature.filters or {}
    group_by = meter.group_by or {}
    filters_key = json.dumps(filters, sort_keys=True)
    for _ in range(3):
        guess = _watermarks.get(meter.pk)
        if guess is None:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT coalesce((SELECT watermark FROM metering_rollupstate "
                    "WHERE meter_id = %s), 0)",
                    [meter.pk],
                )
                guess = cursor.fetchone()[0]
        late = _late_events(meter, guess)
        params: dict = {"meter": meter.pk, "type": meter.event_type, "customers": ids}
        value = meter_sql.value_expr(meter, params, column="e.data")
        bucket_filter = _filter_sql(filters, group_by, params, bucket=True)
        raw_filter = _filter_sql(filters, group_by, params, bucket=False)
        selects, past_keys = [], []
        for i, (start, end) in enumerate(ranges):
            inner_start, inner_end = meter_sql.whole_hours(start, end)
            day = max(inner_start, min(inner_end, _floor_day(inner_end)))
            params.update(
                {
                    f"start{i}": start,
                    f"end{i}": end,
                    f"inner_start{i}": inner_start,
                    f"inner_end{i}": inner_end,
                    f"day{i}": day,
                }
            )
            key = (meter.pk, filters_key, tuple(ids), inner_start, day)
            known = _past_days_known(key) if day > inner_start else None
            if day <= inner_start:
                recount = "FALSE"
            elif known is None:
                recount = "TRUE"
            else:
                params[f"xmin{i}"] = known[1]
                recount = _TOUCHED.format(i=i)
            past_keys.append((key, known))
            by_consumer = _consumers_sql(consumers, start, end, params, str(i))
            # raw events: the partial hours at the edges, by time...
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
                params[f"fx{i}"] = (
                    max(guess, late.horizon)
                    if late.earliest is None or late.earliest >= inner_end
                    else guess
                )
                when.append(
                    f"(e.time >= %(inner_start{i})s AND e.time < %(inner_end{i})s "
                    f"AND e.xid >= %(fx{i})s)"
                )
            # parts that are empty by their bounds are left out: less to plan
            selects.append(
                _RANGE.format(
                    i=i,
                    recount=recount,
                    buckets=_BUCKETS.format(i=i, bucket_filter=bucket_filter)
                    if inner_end > inner_start
                    else _NO_BUCKETS,
                    raw=_RAW.format(
                        value=value,
                        when="(" + " OR ".join(when) + ")",
                        consumers=by_consumer,
                        raw_filter=raw_filter,
                    )
                    if when and by_consumer != "FALSE"
                    else _NOTHING,
                )
            )
        statement, left = _inline("\nUNION ALL\n".join(selects) + "\nORDER BY n", params)
        with connection.cursor() as cursor:
            cursor.execute(statement, left)
            rows = cursor.fetchall()
        watermark = rows[0][11]
        _watermarks[meter.pk] = watermark
        if watermark != guess:
            continue  # a rollup ran in between: the raw part counted the wrong events
        quantities = []
        for row, (key, known) in zip(rows, past_keys, strict=True):
            if row[1]:  # the past days were summed again
                past = _partial(*row[2:5])
                _past_days_remember(key, (past, row[12]))
            else:
                past = known[0] if known is not None else _Partial()
            total = past + _partial(*row[5:8]) + _partial(*row[8:11])
            quantities.append(total.quantity(meter.aggregation))
        return quantities
    return _usage_generic(feature=feature, customer_ids=ids, ranges=ranges)


def _usage_generic(
    *, feature: Feature, customer_ids: Sequence[int], ranges: list[tuple[datetime, datetime]]
) -> list[Decimal]:
    return [
        feature_usage(feature=feature, customer_ids=customer_ids, start=s, end=e).quantity
        for s, e in ranges
    ]
