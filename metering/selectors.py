"""Reads in metering: unattributed usage, rollup problems, and the event store (usage
itself is ``metering.usage``'s).

Every function is a read; none writes or reads the clock.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Count, Max, Q

from customers.selectors import consumer_mapping_at
from metering.models import (
    ROLLUP_FAILURE_EVENT_IDS,
    Event,
    Meter,
    RefusedEvent,
    RollupFailure,
)
from metering.services import meter_counted_nothing, meter_has_data


@dataclass(frozen=True)
class UnattributedSubject:
    """A subject with stored events that no consumer mapping covered at their time."""

    subject: str
    events: int
    first_time: datetime
    last_time: datetime


# Counted from the raw events, not the buckets: an event counted by two meters (or by
# none) is one event. The containment test is the one the GiST index behind the
# mapping's exclusion constraint answers.
_UNATTRIBUTED_SQL = """
SELECT e.subject, count(*), min(e.time), max(e.time)
FROM metering_event e
WHERE {where}
  AND NOT EXISTS (
    SELECT 1 FROM customers_consumermapping m
    WHERE m.consumer_key = e.subject
      AND tstzrange(m.valid_from, m.valid_to, '[)') @> e.time
  )
GROUP BY e.subject
ORDER BY count(*) DESC, e.subject
"""


def unattributed_usage(
    *, since: datetime | None = None, until: datetime | None = None
) -> list[UnattributedSubject]:
    """Subjects whose events (with ``since <= time < until`` when given) had no consumer
    mapping at the event's time, with the number of such events and the first and last
    of their times; most events first.

    Every stored event counts once, whatever meters count it (or none).
    """
    where, params = ["TRUE"], []
    # literal bounds, not "IS NULL OR": the planner prunes partitions on them
    if since is not None:
        where.append("e.time >= %s")
        params.append(since)
    if until is not None:
        where.append("e.time < %s")
        params.append(until)
    with connection.cursor() as cursor:
        cursor.execute(_UNATTRIBUTED_SQL.format(where=" AND ".join(where)), params)
        return [
            UnattributedSubject(subject=s, events=n, first_time=first, last_time=last)
            for s, n, first, last in cursor.fetchall()
        ]


def events_newest_xid() -> int | None:
    """The id of the transaction that stored the newest events (None without events):
    the rollup has caught up with every stored event once each meter's watermark is
    above it."""
    return Event.objects.aggregate(newest=Max("xid"))["newest"]


def event_times(*, event_id: str) -> list[datetime]:
    """The times of the stored events with this id (one per source), from the key table:
    with the time known, the event table is searched in one partition, by index."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT time FROM metering_eventkey WHERE event_id = %s", [event_id])
        return [row[0] for row in cursor.fetchall()]


def event_id_filter(*, event_id: str) -> Q:
    """Events with this id, as a filter the partitioned table answers by index."""
    times = event_times(event_id=event_id)
    return Q(event_id=event_id, time__in=times) if times else Q(pk__in=[])


def event_search(*, term: str) -> Q:
    """Events whose subject, type or id is exactly ``term``. Each column is asked first
    (by index) whether it has the term, so the filter has only branches an index answers."""
    found = []
    if Event.objects.filter(subject=term).exists():
        found.append(Q(subject=term))
    if Event.objects.filter(type=term).exists():
        found.append(Q(type=term))
    if times := event_times(event_id=term):
        found.append(Q(event_id=term, time__in=times))
    if not found:
        return Q(pk__in=[])
    return functools.reduce(operator.or_, found)


def recent_events(
    *,
    subject: str | None = None,
    event_id: str | None = None,
    type: str | None = None,
    limit: int = 100,
) -> list[Event]:
    """The newest stored events (by event time), optionally of one subject, event id or
    type (exact matches, each answered by an index)."""
    events = Event.objects.order_by("-time", "-id")
    if subject:
        events = events.filter(subject=subject)
    if event_id:
        events = events.filter(event_id_filter(event_id=event_id))
    if type:
        events = events.filter(type=type)
    return list(events[:limit])


def event_attribution(*, event: Event) -> str | None:
    """The key of the customer the event's subject was mapped to at the event's time, or
    None when it was unattributed then (an event is attributed by its own time)."""
    mapping = consumer_mapping_at(consumer_key=event.subject, at=event.time)
    return mapping.customer.key if mapping else None


def meter_delete_blocker(*, meter: Meter) -> str | None:
    """Why the meter cannot be deleted (it has data, or features use it), or None."""
    features = list(meter.features.order_by("key").values_list("key", flat=True)[:5])
    if features:
        return f"Features use this meter: {', '.join(features)}."
    if meter_has_data(meter=meter) and not meter_counted_nothing(meter=meter):
        return "The meter has data (stored events of its type or rolled-up usage)."
    return None


@dataclass(frozen=True)
class MeterRollupProblem:
    """What needs an operator about one meter's rollup.

    ``halted_since``: the rollup of its new events fails since then (None: it runs), with
    ``error`` and the ``event_ids`` found to cause it. ``refused``: events it left out of
    its buckets and no operator acknowledged yet (``event_ids`` names the first of them
    when the meter is not halted). ``reattributions``: consumer keys whose usage it could
    not re-attribute after a mapping change (``reattribution_error``: the first one's).
    Event ids are ``metering_event.id``, at most ``ROLLUP_FAILURE_EVENT_IDS``.
    """

    meter_id: int
    meter_key: str
    halted_since: datetime | None = None
    last_failed_at: datetime | None = None
    attempts: int = 0
    error: str = ""
    event_ids: tuple[int, ...] = ()
    refused: int = 0
    refused_reason: str = ""  # why the first of them was refused
    reattributions: tuple[str, ...] = ()
    reattribution_error: str = ""


def rollup_problems(*, meter_ids: Sequence[int] | None = None) -> list[MeterRollupProblem]:
    """Every meter whose rollup needs an operator (of ``meter_ids``, or all): halted ones
    first (the longest halted first), then the others by key. A few indexed queries,
    whatever the number of events."""
    failures = RollupFailure.objects.select_related("meter").order_by("first_failed_at", "id")
    refused = RefusedEvent.objects.filter(acknowledged_at__isnull=True)
    if meter_ids is not None:
        failures = failures.filter(meter_id__in=meter_ids)
        refused = refused.filter(meter_id__in=meter_ids)
    found: dict[int, dict] = {}

    def entry(meter_id: int, key: str) -> dict:
        return found.setdefault(meter_id, {"meter_id": meter_id, "meter_key": key})

    for failure in failures:
        item = entry(failure.meter_id, failure.meter.key)
        if failure.stage == RollupFailure.Stage.ROLLUP:
            item.update(
                halted_since=failure.first_failed_at,
                last_failed_at=failure.last_failed_at,
                attempts=failure.attempts,
                error=failure.error,
                event_ids=tuple(failure.event_ids),
            )
        else:
            item["reattributions"] = (*item.get("reattributions", ()), failure.consumer_key)
            item.setdefault("reattribution_error", failure.error)
    counts = refused.values("meter_id", "meter__key").annotate(n=Count("id")).order_by()
    for row in counts:
        item = entry(row["meter_id"], row["meter__key"])
        item["refused"] = row["n"]
        first = list(
            refused.filter(meter_id=row["meter_id"])
            .order_by("event_pk")
            .values_list("event_pk", "reason")[:ROLLUP_FAILURE_EVENT_IDS]
        )
        item["refused_reason"] = first[0][1] if first else ""
        if not item.get("event_ids"):
            item["event_ids"] = tuple(pk for pk, _ in first)
    problems = [MeterRollupProblem(**item) for item in found.values()]
    return sorted(
        problems,
        key=lambda p: (
            p.halted_since is None,
            p.halted_since.timestamp() if p.halted_since else 0,
            p.meter_key,
        ),
    )
