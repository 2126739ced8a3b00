"""Writes in metering: storing events, rolling them up, and the meter catalog."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from customers.models import ConsumerMappingChange
from metering import refusals, sql
from metering.ingest import CloudEvent, events_store
from metering.models import (
    Aggregation,
    Event,
    Feature,
    Meter,
    RefusedEvent,
    RollupFailure,
    RollupState,
)
from metering.rollup import RollupResult, meters_rollup, subject_reattribute, watermark_lock

logger = logging.getLogger(__name__)

LOCKED_METER_FIELDS = ("event_type", "aggregation", "value_property")


def events_ingest(
    *, events: list[CloudEvent], received_at: datetime, max_new_partitions: int | None = None
) -> int:
    """Store a validated batch; returns the number of new events (duplicates count once).

    Raises ``TooManyPartitions`` (nothing stored) past ``max_new_partitions`` new months.
    """
    return events_store(
        events=events, received_at=received_at, max_new_partitions=max_new_partitions
    )


@dataclass(frozen=True)
class UsageRollupResult:
    meters: list[RollupResult]
    mapping_changes: int
    events_reattributed: int
    reattributions_failed: int = 0  # (meter, consumer key) re-attributions left to retry

    @property
    def events(self) -> int:
        return sum(r.events for r in self.meters)

    @property
    def failed(self) -> list[RollupResult]:
        """The meters whose rollup failed this run (recorded as ``RollupFailure``)."""
        return [r for r in self.meters if r.error]

    @property
    def refused(self) -> int:
        return sum(r.refused for r in self.meters)


def _reattribute(
    *, meter: Meter, subject: str, start: datetime, end: datetime | None, now: datetime
) -> int | None:
    """``subject_reattribute`` in a savepoint: the events re-aggregated, or None when it
    failed; then the failure is recorded on the meter (to retry), and the caller's
    transaction goes on with the other meters."""
    key = {"consumer_key": subject, "range_start": start, "range_end": end}
    try:
        events = subject_reattribute(meter=meter, subject=subject, start=start, end=end)
    except Exception as exc:  # one meter's failure is its own
        logger.warning("Re-attributing %s for meter %s failed: %s", subject, meter.key, exc)
        refusals.failure_record(
            meter=meter,
            stage=RollupFailure.Stage.REATTRIBUTION,
            error=refusals.error_text(exc),
            now=now,
            **key,
        )
        return None
    RollupFailure.objects.filter(
        meter=meter, stage=RollupFailure.Stage.REATTRIBUTION, **key
    ).delete()
    return events


def _reattributions_retry(*, now: datetime, limit: int) -> tuple[int, int]:
    """Try again the re-attributions that failed before; (still failing, events)."""
    failing = events = 0
    pending = list(
        RollupFailure.objects.filter(stage=RollupFailure.Stage.REATTRIBUTION)
        .select_related("meter")
        .order_by("id")[:limit]
    )
    for failure in pending:
        with transaction.atomic():
            claimed = (
                RollupFailure.objects.select_for_update(skip_locked=True)
                .filter(pk=failure.pk)
                .first()
            )
            if claimed is None:  # another worker has it, or it is done
                continue
            done = _reattribute(
                meter=failure.meter,
                subject=failure.consumer_key,
                start=failure.range_start,
                end=failure.range_end,
                now=now,
            )
        if done is None:
            failing += 1
        else:
            events += done
    return failing, events


def mapping_changes_apply(*, now: datetime, limit: int = 100) -> tuple[int, int]:
    """Re-attribute rolled-up usage for consumer mapping changes not yet applied.

    Claims changes with ``FOR UPDATE SKIP LOCKED`` so concurrent workers share them; each
    change is applied to every meter and marked in one transaction. A meter whose
    re-attribution fails is rolled back alone (a savepoint) and recorded as failing
    (``RollupFailure``, stage ``reattribution``): the other meters and changes go on,
    and each run tries the failed ones again first. Returns (changes, events).
    """
    _, events = _reattributions_retry(now=now, limit=limit)
    changes = 0
    meters = list(Meter.objects.order_by("pk"))
    while changes < limit:
        with transaction.atomic():
            change = (
                ConsumerMappingChange.objects.select_for_update(skip_locked=True)
                .filter(processed_at__isnull=True)
                .order_by("id")
                .first()
            )
            if change is None:
                break
            for meter in meters:
                events += (
                    _reattribute(
                        meter=meter,
                        subject=change.consumer_key,
                        start=change.range_start,
                        end=change.range_end,
                        now=now,
                    )
                    or 0
                )
            with connection.cursor() as cursor:
                cursor.execute("SELECT now()")
                change.processed_at = cursor.fetchone()[0]
            change.save(update_fields=["processed_at"])
            changes += 1
    return changes, events


def usage_rollup(*, now: datetime) -> UsageRollupResult:
    """Bring every meter's buckets up to date with the stored events and mappings.

    Safe to run at any time and from several workers at once. One meter's failure stops
    neither the other meters nor the mapping changes: it is recorded (``RollupFailure``,
    refused events as ``RefusedEvent``) and reported in the result, never raised.
    """
    results = meters_rollup(meters=list(Meter.objects.order_by("pk")), now=now)
    changes, reattributed = mapping_changes_apply(now=now)
    return UsageRollupResult(
        meters=results,
        mapping_changes=changes,
        events_reattributed=reattributed,
        reattributions_failed=RollupFailure.objects.filter(
            stage=RollupFailure.Stage.REATTRIBUTION
        ).count(),
    )


def refused_events_acknowledge(*, ids: list[int], now: datetime) -> int:
    """Mark refused events as seen by an operator (they leave the dashboard); returns
    how many were not acknowledged before. The events stay refused."""
    return RefusedEvent.objects.filter(pk__in=ids, acknowledged_at__isnull=True).update(
        acknowledged_at=now
    )


def event_refusal_blocker(*, meter: Meter, event_pk: int) -> str | None:
    """Why an operator cannot refuse the stored event ``event_pk`` for ``meter``, or None.

    Only an event of the meter's type that it has not rolled up yet can be refused:
    one in the buckets already would have to be taken out of them, and refusing never
    changes what was counted."""
    event = Event.objects.filter(pk=event_pk).only("type", "xid").first()
    if event is None:
        return f"No stored event has the row id {event_pk}."
    if event.type != meter.event_type:
        return f"Event {event_pk} is of type {event.type!r}; meter {meter.key} counts {meter.event_type!r}."
    if RefusedEvent.objects.filter(meter=meter, event_pk=event_pk).exists():
        return f"Meter {meter.key} refused event {event_pk} already."
    watermark = RollupState.objects.filter(meter=meter).values_list("watermark", flat=True).first()
    if watermark is not None and event.xid < watermark:
        return (
            f"Meter {meter.key} has rolled event {event_pk} up already: it is counted, and "
            "refusing it now would change usage that may be billed."
        )
    return None


def event_refuse(
    *, meter: Meter, event_pk: int, reason: str, actor: str, now: datetime
) -> RefusedEvent:
    """An operator leaves the stored event ``event_pk`` out of ``meter``'s buckets for
    good: the way out for a meter halted with no single event to blame (say, a sum of
    old events no bucket can hold). Acknowledged at once (the operator decided it).
    Raises ``ValidationError`` (see ``event_refusal_blocker``)."""
    with transaction.atomic(), connection.cursor() as cursor:
        watermark_lock(cursor, meter)  # no rollup of the meter meanwhile
        blocker = event_refusal_blocker(meter=meter, event_pk=event_pk)
        if blocker:
            raise ValidationError({"event_pk": blocker})
        event = Event.objects.get(pk=event_pk)
        return RefusedEvent.objects.create(
            meter=meter,
            event_pk=event.pk,
            event_time=event.time,
            source=event.source,
            event_id=event.event_id,
            subject=event.subject,
            xid=event.xid,
            reason=f"refused by {actor}: {reason}",
            refused_at=now,
            acknowledged_at=now,
        )


def meter_has_data(*, meter: Meter) -> bool:
    """Whether any stored event counts for the meter (or any bucket exists)."""
    if meter.pk and meter.buckets.exists():
        return True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM metering_event WHERE type = %s)", [meter.event_type]
        )
        return cursor.fetchone()[0]


def meter_validate(*, meter: Meter) -> None:
    """Field rules a meter must meet; raises ``ValidationError`` per field."""
    errors: dict[str, list[str]] = {}
    if meter.aggregation != Aggregation.COUNT and not meter.value_property:
        errors.setdefault("value_property", []).append(
            f"{meter.aggregation} needs a value (a JSONPath, e.g. $.tokens)."
        )
    if not isinstance(meter.group_by, dict):
        errors.setdefault("group_by", []).append(
            'Give an object of name to JSONPath, e.g. {"model": "$.model"}.'
        )
    else:
        for name, path in meter.group_by.items():
            if not isinstance(path, str) or not path.startswith("$"):
                errors.setdefault("group_by", []).append(f"{name}: a JSONPath starting with '$'.")
    if not errors:  # each path as the rollup's SQL will read it (asks PostgreSQL)
        for field, messages in sql.meter_path_problems(meter).items():
            errors.setdefault(field, []).extend(messages)
    if errors:
        raise ValidationError(errors)


def meter_counted_nothing(*, meter: Meter) -> bool:
    """Whether ``meter`` (as stored) cannot be evaluated and has no bucket: nothing was
    ever counted under it, so changing or deleting it changes no usage. Such a meter
    (saved before its paths were checked) stays fixable and deletable."""
    if meter.pk is None or meter.buckets.exists():
        return False
    return bool(sql.meter_path_problems(meter))


def meter_locked_fields(*, meter: Meter) -> tuple[str, ...]:
    """The fields of the stored ``meter`` that can no longer change: its event type,
    aggregation and value once it has data (but see ``meter_counted_nothing``)."""
    if not meter_has_data(meter=meter) or meter_counted_nothing(meter=meter):
        return ()
    return LOCKED_METER_FIELDS


def _meter_locked_change(meter: Meter) -> list[str]:
    if meter.pk is None:
        return []
    before = Meter.objects.get(pk=meter.pk)
    changed = [f for f in LOCKED_METER_FIELDS if getattr(before, f) != getattr(meter, f)]
    if not changed:
        return []
    # the data question is about the stored meaning: events of the old type
    locked = meter_locked_fields(meter=before)
    return [f for f in changed if f in locked]


def meter_save(*, meter: Meter) -> Meter:
    """Create or update a meter. Once it has data, its event type, aggregation and value
    are fixed: changing them raises ``ValidationError`` (make a new meter instead)."""
    meter.full_clean()
    meter_validate(meter=meter)
    with transaction.atomic():
        locked = _meter_locked_change(meter)
        if locked:
            raise ValidationError(
                {
                    field: f"{field} cannot change once the meter has data; create a new meter instead."
                    for field in locked
                }
            )
        meter.save()
    return meter


def meter_create(**fields: Any) -> Meter:
    return meter_save(meter=Meter(**fields))


def meter_update(*, meter: Meter, **fields: Any) -> Meter:
    for name, value in fields.items():
        setattr(meter, name, value)
    return meter_save(meter=meter)


def feature_validate(*, feature: Feature) -> None:
    filters = feature.filters
    if not isinstance(filters, dict):
        raise ValidationError(
            {"filters": 'Give an object of dimension to values, e.g. {"status": ["200"]}.'}
        )
    errors = []
    dims = set(feature.meter.group_by or {}) if feature.meter_id else set()
    for name, values in filters.items():
        if name not in dims:
            errors.append(
                f"{name}: the meter has no such dimension (it has: {', '.join(sorted(dims)) or 'none'})."
            )
        elif (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str | int | float) for v in values)
        ):
            errors.append(f"{name}: give a non-empty list of values.")
    if errors:
        raise ValidationError({"filters": errors})


def feature_save(*, feature: Feature) -> Feature:
    feature.full_clean()
    feature_validate(feature=feature)
    feature.filters = {k: [str(v) for v in vs] for k, vs in feature.filters.items()}
    feature.save()
    return feature


def feature_create(**fields: Any) -> Feature:
    return feature_save(feature=Feature(**fields))


def feature_update(*, feature: Feature, **fields: Any) -> Feature:
    for name, value in fields.items():
        setattr(feature, name, value)
    return feature_save(feature=feature)
