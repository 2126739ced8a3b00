"""A feature's usage per local day or hour, for charts: read from the hourly buckets
(usage not yet rolled up is left out: a chart does not need the last minute)."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Literal

from django.core.exceptions import ValidationError
from django.db import connection

from customers.models import Customer
from metering import sql
from metering.models import Aggregation, Feature, Meter

Window = Literal["day", "hour"]
MAX_SERIES_WINDOWS = 5000


@dataclass(frozen=True)
class UsagePoint:
    """One window of a usage series; ``value`` is None where the aggregation has no value
    in the window (MIN, MAX, AVG and LATEST of a window without values)."""

    window_start: datetime
    value: Decimal | None


# value of a window from its buckets, as the rollup keeps them exact across hours
_SERIES_VALUES = {
    Aggregation.COUNT: "sum(b.event_count)",
    Aggregation.SUM: "sum(b.value_sum)",
    Aggregation.MIN: "min(b.value_min)",
    Aggregation.MAX: "max(b.value_max)",
    Aggregation.AVG: "sum(b.value_sum) / nullif(sum(b.value_count), 0)",
    Aggregation.LATEST: (
        "(array_agg(b.latest_value ORDER BY b.latest_time DESC, b.latest_event_id DESC)"
        " FILTER (WHERE b.latest_time IS NOT NULL))[1]"
    ),
    Aggregation.UNIQUE_COUNT: "count(DISTINCT uv.value)",
}
_ADDITIVE = {Aggregation.COUNT, Aggregation.SUM, Aggregation.UNIQUE_COUNT}


def usage_series(
    *,
    meter: Meter,
    start: datetime,
    end: datetime,
    customer: Customer | None = None,
    feature: Feature | None = None,
    window: Window = "day",
    timezone: str = "UTC",
) -> list[UsagePoint]:
    """The meter's usage per ``window`` (local days or hours of ``timezone``) from the
    hourly buckets whose hour lies in ``[start, end)``: every window touching the range,
    in order, empty ones included (0 for COUNT, SUM and UNIQUE_COUNT; None otherwise).

    ``customer`` limits it to usage attributed to that customer; ``feature`` (a feature of
    ``meter``) applies its dimension filters. Usage not yet rolled up is not included.
    A bucket belongs to the window its hour starts in, so days in a zone whose offset is
    not a whole number of hours (Asia/Kolkata) are approximate to the half hour.

    Raises ``ValidationError`` for an unknown time zone, an empty range, a feature of
    another meter, or more than ``MAX_SERIES_WINDOWS`` windows.
    """
    zone = _zone(timezone)
    if feature is not None and feature.meter_id != meter.pk:
        raise ValidationError({"feature": f"{feature.key} is not a feature of meter {meter.key}."})
    starts = series_windows(start=start, end=end, window=window, zone=zone)
    aggregation = Aggregation(meter.aggregation)
    table = "metering_usagebucket b"
    if aggregation == Aggregation.UNIQUE_COUNT:  # one row per distinct value of each bucket
        table += " CROSS JOIN LATERAL unnest(b.unique_values) AS uv(value)"
    where = ["b.meter_id = %(meter)s", "b.hour >= %(start)s", "b.hour < %(end)s"]
    params: dict[str, object] = {
        "meter": meter.pk,
        "start": start,
        "end": end,
        "unit": window,
        "tz": timezone,
    }
    if customer is not None:
        where.append("b.customer_id = %(customer)s")
        params["customer"] = customer.pk
    where += sql.dims_filter(
        feature.filters if feature else {}, sql.binder(params), column="b.dims"
    )
    text = (
        f"SELECT date_trunc(%(unit)s::text, b.hour, %(tz)s::text) AS w, {_SERIES_VALUES[aggregation]} "
        f"FROM {table} WHERE {' AND '.join(where)} GROUP BY 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        found = {w.astimezone(UTC): value for w, value in cursor.fetchall()}
    empty = Decimal(0) if aggregation in _ADDITIVE else None
    return [UsagePoint(window_start=w, value=_decimal(found.get(w, empty))) for w in starts]


def _decimal(value) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    return Decimal(value)


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            {"timezone": f"{name!r} is not an IANA time zone (for example 'Europe/Berlin')."}
        ) from exc


def series_windows(
    *, start: datetime, end: datetime, window: Window, zone: zoneinfo.ZoneInfo
) -> list[datetime]:
    """The UTC starts of the local days or hours of ``zone`` that touch ``[start, end)``,
    the same instants PostgreSQL's ``date_trunc(window, t, zone)`` gives."""
    if end <= start:
        raise ValidationError({"end": "Must be after the start."})
    if window not in ("day", "hour"):
        raise ValidationError({"window": "Use 'day' or 'hour'."})
    if window == "hour":
        local = start.astimezone(zone)
        first = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        count = -(-(end - first) // timedelta(hours=1))
        if count > MAX_SERIES_WINDOWS:
            raise ValidationError({"window": f"More than {MAX_SERIES_WINDOWS} hours; use days."})
        return [first + timedelta(hours=i) for i in range(count)]
    starts: list[datetime] = []
    day = start.astimezone(zone).date()
    while True:
        at = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
        if at >= end:
            return starts
        starts.append(at)
        if len(starts) > MAX_SERIES_WINDOWS:
            raise ValidationError({"window": f"More than {MAX_SERIES_WINDOWS} days."})
        day += timedelta(days=1)
