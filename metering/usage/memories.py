"""What the fresh usage statement (``metering.usage.fresh``) remembers per process.

The last rollup watermark seen per meter (a guess that each statement checks), the
bucket sums of whole past UTC days per range (checked against ``metering_usagetouch`` by
each statement; shared through the cache so that a range is summed once, not once per
process), and how old the events not rolled up are (``LateEvents``). None of them is
ever trusted unchecked or beyond what it proves, so none needs invalidating.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time as time_module
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from time import monotonic as time_monotonic

from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connection

from metering.models import Aggregation, Meter

logger = logging.getLogger(__name__)

ZERO = Decimal(0)


@dataclass(frozen=True)
class AdditivePartial:
    """What an additive answer needs: events, the sum of values, how many had one."""

    events: int = 0
    total: Decimal = ZERO
    values: int = 0

    def __add__(self, other: AdditivePartial) -> AdditivePartial:
        return AdditivePartial(
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
_past_days: dict[tuple, tuple[AdditivePartial, int]] = {}
_PAST_DAYS_MAX = 20_000
_lock = threading.Lock()

PAST_DAYS_SECONDS = 2 * 24 * 3600
# Moved only by a migrate or a flush (a database emptied or made anew, whose ids start
# over): part of the key of the past days' sums, which no catalog change affects.
DATABASE_GENERATION_KEY = "metering:usage:database-generation"


def watermark_guess(meter: Meter) -> int:
    """The meter's rollup watermark as last seen by this process, else as read now."""
    guess = _watermarks.get(meter.pk)
    if guess is None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce((SELECT watermark FROM metering_rollupstate "
                "WHERE meter_id = %s), 0)",
                [meter.pk],
            )
            guess = cursor.fetchone()[0]
    return guess


def watermark_seen(meter: Meter, watermark: int) -> None:
    """Remember the watermark a statement read, as the next statement's guess."""
    _watermarks[meter.pk] = watermark


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


def past_days_known(key: tuple) -> tuple[AdditivePartial, int] | None:
    """A sum of past days' buckets with its horizon: from this process, else from the cache
    (another process summed it), else None. Whichever it is, the statement checks it."""
    known = _past_days.get(key)
    if known is None:
        known = cache.get(_past_days_cache_key(key))
        if known is not None:
            with _lock:
                _past_days[key] = known
    return known


def past_days_remember(key: tuple, known: tuple[AdditivePartial, int]) -> None:
    """Keep a sum of past days' buckets with the horizon it was summed at, here and in
    the cache."""
    with _lock:
        if len(_past_days) >= _PAST_DAYS_MAX:
            _past_days.clear()
        _past_days[key] = known
    cache.set(_past_days_cache_key(key), known, timeout=PAST_DAYS_SECONDS)


@dataclass(frozen=True)
class LateEvents:
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


_late: dict[int, LateEvents] = {}
LATE_EVENTS_SECONDS = 1.0  # how long one reading is used before the next


def late_events(meter: Meter, watermark: int) -> LateEvents:
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
    late = LateEvents(watermark, horizon, earliest, time_monotonic())
    _late[meter.pk] = late
    return late
