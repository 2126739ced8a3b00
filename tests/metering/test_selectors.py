"""Metering reads: unattributed usage from the raw events, usage series from the buckets."""

from __future__ import annotations

import random
import time
import zoneinfo
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from customers.services import consumer_mapping_create
from metering.models import RollupState
from metering.selectors import event_attribution, recent_events, unattributed_usage
from metering.services import feature_create, meter_create, usage_rollup
from metering.usage import series_windows, usage_series
from tests.factories import CustomerFactory
from tests.metering.conftest import cloud_event

NOW = datetime(2026, 12, 1, tzinfo=UTC)
T0 = datetime(2026, 10, 30, tzinfo=UTC)


def roll_up_everything() -> None:
    """Roll up until every stored event is in the buckets.

    The rollup's horizon is the oldest transaction running on the whole server, so on a
    server shared with other work (a benchmark, another test run) it waits for theirs.
    When, after a minute, a transaction of another database that began before the wait
    still holds it, the test is skipped and says so; otherwise it fails.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        began = cursor.fetchone()[0]
    deadline = time.monotonic() + 60
    while True:
        usage_rollup(now=NOW)
        with connection.cursor() as cursor:
            cursor.execute("SELECT coalesce(max(xid), 0) FROM metering_event")
            newest = cursor.fetchone()[0]
        if not RollupState.objects.filter(watermark__lte=newest).exists():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT datname, now() - xact_start FROM pg_stat_activity "
            "WHERE datname IS DISTINCT FROM current_database() AND xact_start < %s "
            "AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) ORDER BY xact_start",
            [began],
        )
        holders = cursor.fetchall()
    if holders:
        pytest.skip(
            f"a transaction in database {holders[0][0]!r} ({holders[0][1]} old) holds the rollup horizon"
        )
    raise AssertionError("the rollup never passed the stored events")


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def generated_events(seed: int, count: int) -> list[dict]:
    """Events of several subjects and types at distinct times over four days."""
    rng = random.Random(seed)
    seconds = rng.sample(range(4 * 24 * 3600), count)
    return [
        cloud_event(
            i,
            type=rng.choice(["llm", "llm", "request"]),
            subject=rng.choice(["s1", "s2", "s3", "s4"]),
            time=iso(T0 + timedelta(seconds=s)),
            tokens=rng.randint(0, 500),
            model=rng.choice(["a", "b"]),
            user=f"u{rng.randint(1, 12)}",
        )
        for i, s in enumerate(seconds)
    ]


def event_time(event: dict) -> datetime:
    return datetime.fromisoformat(event["time"])


# ------------------------------------------------------------------ unattributed usage


@pytest.mark.django_db
def test_unattributed_usage_matches_a_reference_over_generated_events(ingest):
    events = generated_events(seed=7, count=400)
    ingest(*events)
    ingest(*events[:50])  # re-sent: duplicates count once
    acme, globex = CustomerFactory(key="acme"), CustomerFactory(key="globex")
    # s1 mapped throughout; s2 for one day only; s3 moves customer; s4 never mapped
    windows = {
        "s1": [(T0 - timedelta(days=1), None)],
        "s2": [(T0 + timedelta(days=1), T0 + timedelta(days=2))],
        "s3": [(T0, T0 + timedelta(hours=30)), (T0 + timedelta(hours=40), None)],
    }
    for subject, spans in windows.items():
        for i, (start, end) in enumerate(spans):
            consumer_mapping_create(
                consumer_key=subject, customer=[acme, globex][i], valid_from=start, valid_to=end
            )

    def mapped(event: dict) -> bool:
        at = event_time(event)
        return any(s <= at and (e is None or at < e) for s, e in windows.get(event["subject"], []))

    def reference(since=None, until=None) -> list[tuple]:
        found = defaultdict(list)
        for event in events:
            at = event_time(event)
            if (since and at < since) or (until and at >= until) or mapped(event):
                continue
            found[event["subject"]].append(at)
        rows = [(s, len(ts), min(ts), max(ts)) for s, ts in found.items()]
        return sorted(rows, key=lambda r: (-r[1], r[0]))

    def actual(**bounds) -> list[tuple]:
        return [
            (u.subject, u.events, u.first_time, u.last_time) for u in unattributed_usage(**bounds)
        ]

    assert actual() == reference()
    assert {r[0] for r in actual()} == {"s2", "s3", "s4"}
    since, until = T0 + timedelta(hours=20), T0 + timedelta(hours=50)
    assert actual(since=since) == reference(since=since)
    assert actual(since=since, until=until) == reference(since=since, until=until)


@pytest.mark.django_db
def test_an_event_counted_by_two_meters_is_one_unattributed_event(ingest):
    meter_create(key="calls", event_type="request", aggregation="COUNT")
    meter_create(key="bytes", event_type="request", aggregation="SUM", value_property="$.bytes")
    ingest(cloud_event(1, subject="stray", bytes=10), cloud_event(2, subject="stray", bytes=5))

    [row] = unattributed_usage()

    assert (row.subject, row.events) == ("stray", 2)


@pytest.mark.django_db
def test_mapping_a_subject_from_its_first_event_leaves_nothing_unattributed(ingest):
    ingest(
        cloud_event(1, subject="late", time="2026-11-01T10:00:00Z"),
        cloud_event(2, subject="late", time="2026-11-03T10:00:00Z"),
    )
    [row] = unattributed_usage()
    consumer_mapping_create(
        consumer_key="late", customer=CustomerFactory(), valid_from=row.first_time
    )

    assert unattributed_usage() == []


# ------------------------------------------------------------------ event reads


@pytest.mark.django_db
def test_recent_events_are_newest_first_and_filter_exactly(ingest):
    ingest(
        cloud_event(1, subject="a", time="2026-11-01T10:00:00Z"),
        cloud_event(2, subject="a", time="2026-11-02T10:00:00Z", type="llm"),
        cloud_event(3, subject="ab", time="2026-11-03T10:00:00Z"),
    )

    assert [e.event_id for e in recent_events()] == ["3", "2", "1"]
    assert [e.event_id for e in recent_events(subject="a")] == ["2", "1"]
    assert [e.event_id for e in recent_events(type="llm")] == ["2"]
    assert [e.event_id for e in recent_events(event_id="1")] == ["1"]
    assert len(recent_events(limit=2)) == 2


@pytest.mark.django_db
def test_an_event_is_attributed_by_its_own_time(ingest):
    ingest(
        cloud_event(1, subject="gw", time="2026-11-01T10:00:00Z"),
        cloud_event(2, subject="gw", time="2026-11-20T10:00:00Z"),
    )
    consumer_mapping_create(
        consumer_key="gw",
        customer=CustomerFactory(key="acme"),
        valid_from=datetime(2026, 11, 10, tzinfo=UTC),
    )
    by_id = {e.event_id: e for e in recent_events(subject="gw")}

    assert event_attribution(event=by_id["1"]) is None
    assert event_attribution(event=by_id["2"]) == "acme"


# ------------------------------------------------------------------ usage series


def test_day_windows_follow_the_time_zone_across_a_dst_change():
    # New York leaves daylight saving time on Sunday 2026-11-01
    zone = zoneinfo.ZoneInfo("America/New_York")
    starts = series_windows(
        start=datetime(2026, 10, 31, 4, tzinfo=UTC),
        end=datetime(2026, 11, 3, 5, tzinfo=UTC),
        window="day",
        zone=zone,
    )
    assert starts == [
        datetime(2026, 10, 31, 4, tzinfo=UTC),
        datetime(2026, 11, 1, 4, tzinfo=UTC),
        datetime(2026, 11, 2, 5, tzinfo=UTC),
    ]
    hours = series_windows(start=starts[1], end=starts[2], window="hour", zone=zone)
    assert len(hours) == 25  # the day with the repeated hour


def test_a_series_refuses_an_empty_range():
    at = datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ValidationError):
        series_windows(start=at, end=at, window="day", zone=zoneinfo.ZoneInfo("UTC"))


AGGREGATIONS = ["COUNT", "SUM", "MIN", "MAX", "AVG", "LATEST", "UNIQUE_COUNT"]


def reference_series(events, *, aggregation, zone, window, start, end, keep) -> dict:
    """Per window start (UTC): the aggregation over the kept events, from the raw events."""
    groups = defaultdict(list)
    for event in events:
        at = event_time(event)
        hour = at.replace(minute=0, second=0, microsecond=0)
        if not (start <= hour < end) or not keep(event):
            continue
        local = hour.astimezone(zone)
        if window == "day":
            local = local.replace(hour=0)
        w = local.astimezone(UTC)
        groups[w].append(event)
    result = {}
    for w, group in groups.items():
        tokens = [Decimal(e["data"]["tokens"]) for e in group]
        result[w] = {
            "COUNT": Decimal(len(group)),
            "SUM": sum(tokens),
            "MIN": min(tokens),
            "MAX": max(tokens),
            "AVG": sum(tokens) / len(tokens),
            "LATEST": Decimal(max(group, key=event_time)["data"]["tokens"]),
            "UNIQUE_COUNT": Decimal(len({e["data"]["user"] for e in group})),
        }[aggregation]
    return result


@pytest.mark.django_db(transaction=True)
def test_usage_series_matches_a_reference_per_aggregation_window_and_zone(ingest):
    events = generated_events(seed=11, count=300)
    acme = CustomerFactory(key="acme", timezone="America/New_York")
    consumer_mapping_create(consumer_key="s1", customer=acme, valid_from=T0)
    meters = {
        agg: meter_create(
            key=f"tokens_{agg.lower()}",
            event_type="llm",
            aggregation=agg,
            value_property="$.user" if agg == "UNIQUE_COUNT" else "$.tokens",
            group_by={"model": "$.model"},
        )
        for agg in AGGREGATIONS
    }
    ingest(*events)
    roll_up_everything()
    llm = [e for e in events if e["type"] == "llm"]
    start, end = T0 + timedelta(hours=5), T0 + timedelta(days=3, hours=7)

    for agg, meter in meters.items():
        feature = feature_create(key=f"{meter.key}_a", meter=meter, filters={"model": ["a"]})
        cases = [
            ("UTC", "day", None, None, lambda e: True),
            ("America/New_York", "day", None, None, lambda e: True),
            ("Asia/Tokyo", "hour", None, None, lambda e: True),
            ("UTC", "day", acme, None, lambda e: e["subject"] == "s1"),
            ("UTC", "day", None, feature, lambda e: e["data"]["model"] == "a"),
            (
                "America/New_York",
                "day",
                acme,
                feature,
                lambda e: e["subject"] == "s1" and e["data"]["model"] == "a",
            ),
        ]
        for tz, window, customer, feat, keep in cases:
            zone = zoneinfo.ZoneInfo(tz)
            series = usage_series(
                meter=meter,
                customer=customer,
                feature=feat,
                start=start,
                end=end,
                window=window,
                timezone=tz,
            )
            expected = reference_series(
                llm, aggregation=agg, zone=zone, window=window, start=start, end=end, keep=keep
            )
            case = (agg, tz, window, customer, feat)
            assert len(expected) >= 3, case  # the case has usage to compare
            assert [p.window_start for p in series] == series_windows(
                start=start, end=end, window=window, zone=zone
            ), case
            assert set(expected) <= {p.window_start for p in series}, case
            for point in series:
                want = expected.get(point.window_start)
                if want is None:
                    empty = Decimal(0) if agg in ("COUNT", "SUM", "UNIQUE_COUNT") else None
                    assert point.value == empty, case
                else:
                    assert abs(point.value - want) < Decimal("1e-9"), (case, point, want)


@pytest.mark.django_db(transaction=True)
def test_usage_series_per_day_in_a_customer_zone(ingest):
    meter = meter_create(key="calls", event_type="request", aggregation="COUNT")
    # 03:00Z on Nov 2 is still Nov 1 in New York; 06:00Z is Nov 2
    ingest(
        cloud_event(1, time="2026-11-01T12:00:00Z"),
        cloud_event(2, time="2026-11-02T03:00:00Z"),
        cloud_event(3, time="2026-11-02T06:00:00Z"),
    )
    roll_up_everything()
    start, end = datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 3, 5, tzinfo=UTC)

    in_new_york = usage_series(
        meter=meter, start=start, end=end, window="day", timezone="America/New_York"
    )
    in_utc = usage_series(meter=meter, start=start, end=end, window="day")

    assert [(p.window_start.isoformat(), p.value) for p in in_new_york] == [
        ("2026-11-01T04:00:00+00:00", 2),
        ("2026-11-02T05:00:00+00:00", 1),
    ]
    assert [(p.window_start.day, p.value) for p in in_utc] == [(1, 1), (2, 2), (3, 0)]


@pytest.mark.django_db
def test_a_series_refuses_a_feature_of_another_meter():
    calls = meter_create(key="calls", event_type="request", aggregation="COUNT")
    other = meter_create(key="other", event_type="x", aggregation="COUNT")
    feature = feature_create(key="other_all", meter=other)
    with pytest.raises(ValidationError):
        usage_series(
            meter=calls,
            feature=feature,
            start=datetime(2026, 11, 1, tzinfo=UTC),
            end=datetime(2026, 11, 2, tzinfo=UTC),
        )
    with pytest.raises(ValidationError):
        usage_series(
            meter=calls,
            start=datetime(2026, 11, 1, tzinfo=UTC),
            end=datetime(2026, 11, 2, tzinfo=UTC),
            timezone="Mars/Olympus",
        )
