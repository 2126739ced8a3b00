"""After a meter's rollup fails: find the events its buckets cannot hold, refuse them,
and record failures where the operator looks (``RefusedEvent``, ``RollupFailure``).

Nothing here runs while rollups succeed: the happy path pays one indexed lookup per
meter (its refused events in the range rolled up, normally none) and nothing per event.

Finding the events. A bucket keeps values as ``numeric(40, 12)``, so a value of 10^28 or
more in absolute value (after rounding to 12 places) cannot be stored: one statement
reads every pending event's value, dimensions and distinct value the way the rollup
does, and returns the events whose value is out of bounds. When that statement fails
itself (a value PostgreSQL cannot even compute, such as a numeric string with an
exponent of a million), the pending events are bisected by id, each part probed in a
savepoint, down to the single events that fail. At most ``MAX_PROBES`` probes and
``MAX_REFUSED`` events per run: a meter with more such events is worked through over
several runs, halted and listed on the dashboard meanwhile.

Only data errors (SQLSTATE class 22: overflow, invalid text, SQL/JSON errors) are
searched for: a timeout, a deadlock or a lost connection says nothing about the events,
and the next run simply tries again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db import DatabaseError, transaction
from django.db.models import F

from metering import sql
from metering.models import (
    ROLLUP_FAILURE_EVENT_IDS,
    Aggregation,
    Meter,
    RollupFailure,
    UsageBucket,
)

MAX_PROBES = 400
MAX_REFUSED = 10_000

_VALUE_FIELD = UsageBucket._meta.get_field("value_sum")
SCALE = _VALUE_FIELD.decimal_places  # 12
INTEGER_DIGITS = _VALUE_FIELD.max_digits - _VALUE_FIELD.decimal_places  # 28

# Every per-event expression the rollup computes, each behind metering_fence (VOLATILE)
# so that none is left out for being unused by the outer query. ``NOT (x < bound)`` is
# NULL for a missing value (not returned) and true for NaN and infinities.
_PROBE = """
SELECT s.id, s.v::text FROM (
    SELECT e.id, {value} AS v{columns}
    FROM metering_event e
    WHERE e.type = %(type)s AND e.xid >= %(lo)s AND e.xid < %(hi)s{ids}{refused}
) s
WHERE NOT (abs(round(s.v, {scale})) < 1e{digits})
ORDER BY s.id
LIMIT %(max)s
"""

_REFUSE = """
INSERT INTO metering_refusedevent
    (meter_id, event_pk, event_time, source, event_id, subject, xid, reason, refused_at)
SELECT %(meter)s, e.id, e.time, e.source, e.event_id, e.subject, e.xid, o.reason, %(now)s
FROM unnest(%(ids)s::bigint[], %(reasons)s::text[]) AS o(id, reason)
JOIN metering_event e ON e.id = o.id
WHERE e.type = %(type)s AND e.xid >= %(lo)s AND e.xid < %(hi)s
ON CONFLICT (meter_id, event_pk) DO NOTHING
"""


@dataclass(frozen=True)
class Offender:
    """A pending event the meter cannot roll up (``pk``: ``metering_event.id``)."""

    pk: int
    reason: str


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (Django wraps psycopg's), or None."""
    for error in (exc, exc.__cause__):
        code = getattr(error, "sqlstate", None)
        if code:
            return code
    return None


def is_data_error(exc: BaseException) -> bool:
    """Whether PostgreSQL refused the data (SQLSTATE class 22), not the circumstances."""
    return (sqlstate(exc) or "").startswith("22")


def error_text(exc: BaseException) -> str:
    """A failure as an operator reads it: PostgreSQL's message and its detail line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("LINE ", "^", "CONTEXT:"))]
    return " ".join(lines[:2]) or type(exc).__name__


def _value_text(text: str) -> str:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    return text if len(text) <= 24 else f"{value.normalize():.6g}"


class _Probe:
    """The per-event part of the meter's rollup over ``[lo, hi)``, for a range of ids."""

    def __init__(self, meter: Meter, lo: int, hi: int, refused: Sequence[int]) -> None:
        params: dict = {}
        is_unique = meter.aggregation == Aggregation.UNIQUE_COUNT
        value = "NULL::numeric" if is_unique else sql.value_expr(meter, params)
        if value != "NULL::numeric":
            value = f"metering_fence({value})"
        columns = "".join(
            f", metering_fence({expr}) AS d{i}"
            for i, (_, expr) in enumerate(sql.dims_columns(meter, params))
        )
        if is_unique:
            columns += f", metering_fence({sql.unique_expr(meter, params)}) AS u"
        self.text = _PROBE.format(
            value=value,
            columns=columns,
            ids="{ids}",
            refused=" AND NOT (e.id = ANY(%(refused)s))" if refused else "",
            scale=SCALE,
            digits=INTEGER_DIGITS,
        )
        self.params = {**params, "type": meter.event_type, "lo": lo, "hi": hi}
        if refused:
            self.params["refused"] = list(refused)

    def run(self, cursor, first: int | None, last: int | None, limit: int) -> list[Offender]:
        """The out-of-bounds events with ``first <= id <= last`` (all without bounds).
        Raises what PostgreSQL raises; the savepoint keeps the caller's transaction."""
        ids = "" if first is None else " AND e.id >= %(first)s AND e.id <= %(last)s"
        with transaction.atomic():
            cursor.execute(
                self.text.replace("{ids}", ids),
                {**self.params, "first": first, "last": last, "max": limit},
            )
            rows = cursor.fetchall()
        return [
            Offender(
                pk,
                f"its value {_value_text(v)} is beyond what a usage bucket holds "
                f"(less than 10^{INTEGER_DIGITS} in absolute value)",
            )
            for pk, v in rows
        ]


def offending_events(
    cursor, *, meter: Meter, lo: int, hi: int, refused: Sequence[int] = ()
) -> list[Offender]:
    """The events of ``meter`` stamped in ``[lo, hi)`` (not already refused) that its
    buckets cannot hold, in id order: at most ``MAX_REFUSED``. Runs inside the caller's
    transaction (which holds the meter's watermark lock), each probe in a savepoint.
    Empty when the failure is not the events' (the meter's own paths, a timeout)."""
    probe = _Probe(meter, lo, hi, refused)
    try:
        return probe.run(cursor, None, None, MAX_REFUSED)
    except DatabaseError as exc:
        if not is_data_error(exc):
            return []
    try:  # a probe of no event at all: if it fails, the events are not the cause
        probe.run(cursor, 0, -1, 1)
    except DatabaseError:
        return []
    cursor.execute(
        "SELECT min(e.id), max(e.id) FROM metering_event e "
        "WHERE e.type = %s AND e.xid >= %s AND e.xid < %s",
        [meter.event_type, lo, hi],
    )
    first, last = cursor.fetchone()
    if first is None:
        return []
    found: list[Offender] = []
    ranges = [(first, last)]  # a stack, lowest ids on top: found in id order
    probes = 0
    while ranges and probes < MAX_PROBES and len(found) < MAX_REFUSED:
        a, b = ranges.pop()
        probes += 1
        try:
            found += probe.run(cursor, a, b, MAX_REFUSED - len(found))
        except DatabaseError as exc:
            if not is_data_error(exc):
                break
            if a == b:
                found.append(Offender(a, f"PostgreSQL cannot compute it: {error_text(exc)}"))
            else:
                middle = (a + b) // 2
                ranges += [(middle + 1, b), (a, middle)]
    return found


def events_refuse(
    cursor, *, meter: Meter, offenders: Sequence[Offender], lo: int, hi: int, now: datetime
) -> int:
    """Record ``offenders`` as refused by ``meter`` (once each); returns how many were
    new. In the caller's transaction: they are refused when its rollup commits."""
    if not offenders:
        return 0
    cursor.execute(
        _REFUSE,
        {
            "meter": meter.pk,
            "ids": [o.pk for o in offenders],
            "reasons": [o.reason for o in offenders],
            "type": meter.event_type,
            "lo": lo,
            "hi": hi,
            "now": now,
        },
    )
    return cursor.rowcount


def failure_record(
    *,
    meter: Meter,
    stage: str,
    error: str,
    now: datetime,
    event_ids: Sequence[int] = (),
    consumer_key: str = "",
    range_start: datetime | None = None,
    range_end: datetime | None = None,
) -> None:
    """Record that ``stage`` of ``meter`` failed at ``now``: a new failure, or one more
    attempt of the one already recorded (its first time kept)."""
    key = {
        "meter": meter,
        "stage": stage,
        "consumer_key": consumer_key,
        "range_start": range_start,
        "range_end": range_end,
    }
    ids = list(event_ids)[:ROLLUP_FAILURE_EVENT_IDS]
    with transaction.atomic():
        updated = RollupFailure.objects.filter(**key).update(
            error=error, event_ids=ids, last_failed_at=now, attempts=F("attempts") + 1
        )
        if not updated:
            RollupFailure.objects.create(
                **key, error=error, event_ids=ids, first_failed_at=now, last_failed_at=now
            )
