"""Meter queries: a meter's usage per time window and group, with OpenMeter's semantics.

One SQL statement answers a query, from one of two sources with the same meaning:

- **buckets**: the hourly rollups, plus the events not yet rolled up (``xid`` at or above
  the meter's watermark) aggregated from the raw events and merged in, so an event
  accepted a second ago is already counted. Reading the watermark, the buckets and the
  fresh events in one statement gives them one snapshot, and the rollup moves buckets
  and watermark in one transaction, so no event is counted twice or missed.
- **events**: the raw events alone, attributed through the consumer mapping valid at
  each event's time.

Buckets can answer only when every bucket hour lies inside one window: ``from`` and
``to`` on UTC hour boundaries, and, for HOUR/DAY/MONTH windows, a window time zone whose
offset is a whole number of hours (changing on UTC hour boundaries) wherever buckets
are read. MINUTE windows, unaligned bounds and zones such as Asia/Kolkata read events.

Aggregations merge exactly across sources and hours: SUM adds sums, COUNT adds counts,
MIN/MAX take the extremes, AVG divides the total sum by the total count of values,
LATEST takes the value with the greatest (time, event id), and UNIQUE_COUNT counts the
distinct values of the window (never a sum of hourly counts). A group whose events carry
no value (SUM, AVG, MIN, MAX, LATEST) has no row, as in OpenMeter.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from django.core.exceptions import ValidationError
from django.db import connection

from customers.models import Customer
from metering import sql
from metering.models import Aggregation, Meter

MAX_LIST_ITEMS = 100
SUBJECT = "subject"
CUSTOMER_ALIASES = ("customerId", "customer_id")  # OpenMeter's API name and its internal one


class WindowSize(StrEnum):
    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"
    MONTH = "MONTH"


# date_trunc unit, and a step that lands inside the next window whatever its length
# (a day is 23 to 25 hours, a month 28 to 31 days, plus or minus a DST hour).
_WINDOWS = {
    WindowSize.MINUTE: ("minute", "1 minute"),
    WindowSize.HOUR: ("hour", "1 hour"),
    WindowSize.DAY: ("day", "25 hours"),
    WindowSize.MONTH: ("month", "768 hours"),
}

# value expression and the condition for a group to have a row
_AGGREGATES = {
    Aggregation.SUM: ("sum(s.value_sum)", "sum(s.value_count) > 0"),
    Aggregation.COUNT: ("sum(s.event_count)", "sum(s.event_count) > 0"),
    Aggregation.MIN: ("min(s.value_min)", "sum(s.value_count) > 0"),
    Aggregation.MAX: ("max(s.value_max)", "sum(s.value_count) > 0"),
    Aggregation.AVG: ("sum(s.value_sum) / nullif(sum(s.value_count), 0)", "sum(s.value_count) > 0"),
    Aggregation.LATEST: (
        "(array_agg(s.latest_value ORDER BY s.latest_time DESC, s.latest_event_id DESC)"
        " FILTER (WHERE s.latest_time IS NOT NULL))[1]",
        "sum(s.value_count) > 0",
    ),
    Aggregation.UNIQUE_COUNT: ("count(DISTINCT s.u)", "sum(s.event_count) > 0"),
}


@dataclass(frozen=True)
class MeterQuery:
    """What to ask of a meter. ``start``/``end`` bound event time, half-open; either may be
    open. ``group_by`` names meter dimensions and the reserved ``subject`` and
    ``customerId``; filtering by subjects or customers also groups by them, as in OpenMeter.
    ``customer_keys`` are our customer keys; ``filter_group_by`` keeps usage whose dimension
    has one of the given values."""

    start: datetime | None = None
    end: datetime | None = None
    window_size: WindowSize | None = None
    window_time_zone: str = "UTC"
    subjects: tuple[str, ...] = ()
    customer_keys: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ()
    filter_group_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class MeterQueryRow:
    value: Decimal
    window_start: datetime
    window_end: datetime
    subject: str | None
    customer_key: str | None
    group_by: dict[str, str | None]


@dataclass(frozen=True)
class MeterQueryResult:
    rows: list[MeterQueryRow]
    source: Literal["buckets", "events"]


@dataclass(frozen=True)
class _Plan:
    dimensions: tuple[str, ...]
    by_subject: bool
    by_customer: bool
    customer_ids: tuple[int, ...]
    source: Literal["buckets", "events"]


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def meter_query(*, meter: Meter, query: MeterQuery) -> MeterQueryResult:
    """Answer ``query`` over ``meter``'s usage, one row per window and group that has usage,
    ordered by window start then group.

    Raises ``ValidationError`` keyed by the API's parameter names (``from``, ``to``,
    ``windowTimeZone``, ``groupBy``, ``filterGroupBy``, ``filterCustomerId``).
    """
    plan = _plan(meter, query)
    text, params = _Statement(meter, query, plan).build()
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        found = cursor.fetchall()
    rows = []
    for w, window_end, subject, customer_key, value, first, last, *dims in found:
        if w is None:  # no window: the query's period, or the minutes the usage spans
            first, last = first.astimezone(UTC), last.astimezone(UTC)
            w = query.start or first.replace(second=0, microsecond=0)
            window_end = query.end or last.replace(second=0, microsecond=0) + timedelta(minutes=1)
        rows.append(
            MeterQueryRow(
                value=Decimal(value if value is not None else 0),
                window_start=w.astimezone(UTC),
                window_end=window_end.astimezone(UTC),
                subject=subject if plan.by_subject else None,
                customer_key=customer_key if plan.by_customer else None,
                group_by=dict(zip(plan.dimensions, dims, strict=True)),
            )
        )
    return MeterQueryResult(rows=rows, source=plan.source)


def _plan(meter: Meter, query: MeterQuery) -> _Plan:
    errors: dict[str, list[str]] = {}
    if query.start and query.end and query.start >= query.end:
        errors["to"] = ["Must be after `from`."]
    if query.window_time_zone not in _time_zones():
        errors["windowTimeZone"] = [
            f"{query.window_time_zone!r} is not an IANA time zone (for example 'Europe/Berlin')."
        ]
    meter_dims = set(meter.group_by or {})
    dimensions: list[str] = []
    by_subject = bool(query.subjects)
    by_customer = bool(query.customer_keys)
    for name in query.group_by:
        if name == SUBJECT:
            by_subject = True
        elif name in CUSTOMER_ALIASES:
            by_customer = True
        elif name in meter_dims:
            if name not in dimensions:
                dimensions.append(name)
        else:
            errors.setdefault("groupBy", []).append(
                f"{name!r} is not a dimension of meter {meter.key!r} (it has: "
                f"{', '.join(sorted(meter_dims)) or 'none'}; or subject, customerId)."
            )
    for name in query.filter_group_by:
        if name not in meter_dims:
            errors.setdefault("filterGroupBy", []).append(
                f"{name!r} is not a dimension of meter {meter.key!r}."
            )
    customer_ids: dict[str, int] = {}
    if query.customer_keys:
        customer_ids = dict(
            Customer.objects.filter(key__in=query.customer_keys).values_list("key", "pk")
        )
        for key in query.customer_keys:
            if key not in customer_ids:
                errors.setdefault("filterCustomerId", []).append(f"No customer with key {key!r}.")
    if errors:
        raise ValidationError(errors)
    return _Plan(
        dimensions=tuple(dimensions),
        by_subject=by_subject,
        by_customer=by_customer,
        customer_ids=tuple(sorted(set(customer_ids.values()))),
        source=_source(meter, query),
    )


def _on_hour(instant: datetime | None) -> bool:
    return instant is None or sql.floor_hour(instant) == instant


def _source(meter: Meter, query: MeterQuery) -> Literal["buckets", "events"]:
    """Buckets when every bucket hour the query reads lies inside one window."""
    if query.window_size == WindowSize.MINUTE or not (
        _on_hour(query.start) and _on_hour(query.end)
    ):
        return "events"
    if query.window_size is None or query.window_time_zone in ("UTC", "Etc/UTC"):
        return "buckets"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(hour), max(hour) FROM metering_usagebucket WHERE meter_id = %s "
            "AND (%s::timestamptz IS NULL OR hour >= %s) AND (%s::timestamptz IS NULL OR hour < %s)",
            [meter.pk, query.start, query.start, query.end, query.end],
        )
        first, last = cursor.fetchone()
    if first is None:
        return "buckets"  # nothing rolled up: the fresh events answer alone, exactly
    zone = zoneinfo.ZoneInfo(query.window_time_zone)
    return "buckets" if hour_aligned(zone, first, last + timedelta(hours=1)) else "events"


def hour_aligned(zone: zoneinfo.ZoneInfo, start: datetime, end: datetime) -> bool:
    """Whether ``zone`` is a whole number of hours off UTC throughout ``[start, end]`` and
    changes offset only on UTC hour boundaries: then its local hours, days and months
    begin on UTC hours. Samples daily and bisects each change to the second (tz
    transitions fall on whole seconds)."""

    def offset(ts: int) -> timedelta:
        return datetime.fromtimestamp(ts, zone).utcoffset() or timedelta(0)

    at, stop = int(start.timestamp()), int(end.timestamp())
    current = offset(at)
    while True:
        if current.total_seconds() % 3600:
            return False
        if at >= stop:
            return True
        step = min(at + 86400, stop)
        if offset(step) == current:
            at = step
            continue
        low, high = at, step  # offset(low) == current != offset(high)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if offset(middle) == current else (low, middle)
        if high % 3600:
            return False
        at, current = high, offset(high)


class _Binder:
    """Named parameters for one statement, shared with the fragments of metering.sql."""

    def __init__(self) -> None:
        self.params: dict[str, object] = {}

    def __call__(self, value: object) -> str:
        name = f"q{len(self.params)}"  # metering.sql names its own p<n>
        self.params[name] = value
        return f"%({name})s"

    def fragment(self, build: Callable[..., str], meter: Meter, column: str) -> str:
        return build(meter, self.params, column=column)


class _Statement:
    """One statement: the sources as rows of partial aggregates (a bucket, a distinct value,
    or one event), unioned, then aggregated per window and group."""

    _PARTIALS = (
        "w, subject, customer_id, dims, event_count, value_count, value_sum, value_min, "
        "value_max, latest_time, latest_event_id, latest_value, first_time, last_time, u"
    )

    def __init__(self, meter: Meter, query: MeterQuery, plan: _Plan) -> None:
        self.meter, self.query, self.plan = meter, query, plan
        self.bind = _Binder()
        self.meter_id = self.bind(meter.pk)
        self.tz = self.bind(query.window_time_zone)
        self.unit, self.step = _WINDOWS[query.window_size] if query.window_size else (None, None)
        self.subjects = self.bind(list(query.subjects)) if query.subjects else None
        self.customers = self.bind(list(plan.customer_ids)) if plan.customer_ids else None

    def window(self, column: str) -> str:
        if not self.unit:
            return "NULL::timestamptz"
        return f"date_trunc({self.bind(self.unit)}::text, {column}, {self.tz}::text)"

    def bounds(self, column: str) -> list[str]:
        where = []
        if self.query.start:
            where.append(f"{column} >= {self.bind(self.query.start)}::timestamptz")
        if self.query.end:
            where.append(f"{column} < {self.bind(self.query.end)}::timestamptz")
        return where

    def dim_filters(self, column: str) -> list[str]:
        return sql.dims_filter(self.query.filter_group_by, self.bind, column=column)

    def rolled_up(self, columns: str, *, distinct_values: bool = False) -> str:
        """The meter's buckets in range; with ``distinct_values``, one row per distinct
        value each bucket keeps (UNIQUE_COUNT), as ``uv.value``."""
        where = [
            f"t.meter_id = {self.meter_id}",
            *self.bounds("t.hour"),
            *self.dim_filters("t.dims"),
        ]
        if self.subjects:
            where.append(f"t.subject = ANY({self.subjects}::text[])")
        if self.customers:
            where.append(f"t.customer_id = ANY({self.customers}::bigint[])")
        return (
            f"SELECT {self.window('t.hour')}, t.subject, t.customer_id, t.dims, {columns} "
            "FROM metering_usagebucket t"
            + (
                " CROSS JOIN LATERAL unnest(t.unique_values) AS uv(value)"
                if distinct_values
                else ""
            )
            + f" WHERE {' AND '.join(where)}"
        )

    def events(self, *, fresh_only: bool) -> str:
        """Each event as a partial aggregate, attributed by the mapping at its time."""
        aggregation = self.meter.aggregation
        where = [f"e.type = {self.bind(self.meter.event_type)}::text", *self.bounds("e.time")]
        if self.subjects:
            where.append(f"e.subject = ANY({self.subjects}::text[])")
        if fresh_only:  # read in the same snapshot as the buckets
            where.append(
                "e.xid >= coalesce((SELECT rs.watermark FROM metering_rollupstate rs "
                f"WHERE rs.meter_id = {self.meter_id}), 0)"
            )
        if self.customers:
            where.append(f"m.customer_id = ANY({self.customers}::bigint[])")
        value = "NULL::numeric"
        if aggregation not in (Aggregation.COUNT, Aggregation.UNIQUE_COUNT):
            value = self.bind.fragment(sql.value_expr, self.meter, "e.data")
        unique = "NULL::text"
        if aggregation == Aggregation.UNIQUE_COUNT:
            unique = self.bind.fragment(sql.unique_expr, self.meter, "e.data")
        dims = self.bind.fragment(sql.dims_expr, self.meter, "e.data")
        dim_filters = self.dim_filters("r.dims")
        return (
            f"SELECT {self.window('r.time')}, r.subject, r.customer_id, r.dims, 1::bigint, "
            "(r.v IS NOT NULL)::int::bigint, coalesce(r.v, 0), r.v, r.v, "
            "CASE WHEN r.v IS NOT NULL THEN r.time END, r.id, r.v, r.time, r.time, r.u "
            "FROM (SELECT e.id, e.subject, e.time, m.customer_id, "
            f"{dims} AS dims, {value} AS v, {unique} AS u "
            "FROM metering_event e LEFT JOIN customers_consumermapping m "
            "ON m.consumer_key = e.subject AND m.valid_from <= e.time "
            "AND (m.valid_to IS NULL OR e.time < m.valid_to) "
            f"WHERE {' AND '.join(where)}) r"
            + (f" WHERE {' AND '.join(dim_filters)}" if dim_filters else "")
        )

    def sources(self) -> list[str]:
        if self.plan.source == "events":
            return [self.events(fresh_only=False)]
        parts = [
            self.rolled_up(
                "t.event_count, t.value_count, t.value_sum, t.value_min, t.value_max, "
                "t.latest_time, t.latest_event_id, t.latest_value, t.first_time, t.last_time, "
                "NULL::text",
            )
        ]
        if self.meter.aggregation == Aggregation.UNIQUE_COUNT:
            parts.append(
                self.rolled_up(
                    "0::bigint, 0::bigint, 0::numeric, NULL::numeric, NULL::numeric, "
                    "NULL::timestamptz, NULL::bigint, NULL::numeric, NULL::timestamptz, "
                    "NULL::timestamptz, uv.value",
                    distinct_values=True,
                )
            )
        parts.append(self.events(fresh_only=True))
        return parts

    def build(self) -> tuple[str, dict]:
        plan = self.plan
        groups = ["s.w"]
        if plan.by_subject:
            groups.append("s.subject")
        if plan.by_customer:
            groups.append("s.customer_id")
        dims = [f"(s.dims ->> {self.bind(name)}::text)" for name in plan.dimensions]
        groups.extend(dims)
        value, having = _AGGREGATES[Aggregation(self.meter.aggregation)]
        window_end = "NULL::timestamptz"
        if self.unit:
            window_end = (
                f"date_trunc({self.bind(self.unit)}::text, "
                f"a.w + {self.bind(self.step)}::interval, {self.tz}::text)"
            )
        # without windows, a group's window starts at `from` or at its first usage's minute
        first = (
            "a.w" if self.unit or self.query.start else "date_trunc('minute', a.first_time, 'UTC')"
        )
        order = [first, "a.subject NULLS FIRST", "c.key NULLS FIRST"]
        order += [f"a.g{i} NULLS FIRST" for i in range(len(dims))]
        text = (
            f"WITH s ({self._PARTIALS}) AS ({' UNION ALL '.join(self.sources())}), "
            "a AS (SELECT s.w, "
            f"{'s.subject' if plan.by_subject else 'NULL::text'} AS subject, "
            f"{'s.customer_id' if plan.by_customer else 'NULL::bigint'} AS customer_id, "
            f"{value} AS value, min(s.first_time) AS first_time, max(s.last_time) AS last_time"
            + "".join(f", {dim} AS g{i}" for i, dim in enumerate(dims))
            + f" FROM s GROUP BY {', '.join(groups)} HAVING {having}) "
            f"SELECT a.w, {window_end}, a.subject, c.key, a.value, a.first_time, a.last_time"
            + "".join(f", a.g{i}" for i in range(len(dims)))
            + " FROM a LEFT JOIN customers_customer c ON c.id = a.customer_id "
            f"ORDER BY {', '.join(order)}"
        )
        return text, self.bind.params
