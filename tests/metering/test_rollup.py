"""Rollup tests commit their events (transactional tests): the rollup only takes events of
transactions that have finished, so events inside the test's own open transaction would
(rightly) never be seen."""

import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.db.models import Sum

from customers.services import consumer_key_move, consumer_mapping_create
from metering.models import Meter, UsageBucket
from metering.services import meter_create, usage_rollup
from metering.usage import usage_partials
from tests.factories import CustomerFactory
from tests.metering.conftest import cloud_event

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def tokens_meter(**overrides) -> Meter:
    fields = {
        "key": "llm_tokens",
        "event_type": "llm",
        "aggregation": "SUM",
        "value_property": "$.tokens",
        "group_by": {"model": "$.model"},
    }
    return meter_create(**{**fields, **overrides})


def bucket_totals(meter: Meter) -> dict:
    return {
        (
            b.subject,
            b.hour.isoformat(),
            b.dims.get("model"),
            b.customer.key if b.customer else None,
        ): (b.event_count, b.value_sum)
        for b in UsageBucket.objects.filter(meter=meter).select_related("customer")
    }


def unique_values(meter: Meter) -> dict:
    return {
        (b.subject, b.hour.isoformat(), b.customer.key if b.customer else None): b.unique_values
        for b in UsageBucket.objects.filter(meter=meter).select_related("customer")
    }


def month_unique_count(meter: Meter, customers=None) -> int:
    """The exact distinct count over November, as billing reads it (whole hours from the
    buckets); unattributed usage when no customers are given."""
    if customers is None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(DISTINCT v) FROM metering_usagebucket b, unnest(b.unique_values) v "
                "WHERE b.meter_id = %s",
                [meter.pk],
            )
            return cursor.fetchone()[0]
    partials = usage_partials(
        meter=meter,
        filters={},
        customer_ids=[c.pk for c in customers],
        start=datetime(2026, 11, 1, tzinfo=UTC),
        end=datetime(2026, 12, 1, tzinfo=UTC),
    )
    return partials[-1].distinct


@pytest.mark.django_db(transaction=True)
def test_rollup_aggregates_events_per_subject_hour_and_dimensions(ingest):
    meter = tokens_meter()
    ingest(
        cloud_event(1, type="llm", time="2026-11-01T10:00:00Z", tokens=10, model="a"),
        cloud_event(2, type="llm", time="2026-11-01T10:59:59.999999Z", tokens=5, model="a"),
        cloud_event(3, type="llm", time="2026-11-01T11:00:00Z", tokens=7, model="a"),
        cloud_event(4, type="llm", time="2026-11-01T10:30:00Z", tokens=1, model="b"),
        cloud_event(5, type="request", time="2026-11-01T10:30:00Z", tokens=1000, model="a"),
    )
    result = usage_rollup(now=NOW)
    assert result.events == 4
    assert bucket_totals(meter) == {
        ("acme-gw", "2026-11-01T10:00:00+00:00", "a", None): (2, Decimal(15)),
        ("acme-gw", "2026-11-01T11:00:00+00:00", "a", None): (1, Decimal(7)),
        ("acme-gw", "2026-11-01T10:00:00+00:00", "b", None): (1, Decimal(1)),
    }


@pytest.mark.django_db(transaction=True)
def test_running_the_rollup_again_counts_nothing_twice(ingest):
    meter = tokens_meter()
    ingest(*[cloud_event(i, type="llm", tokens=1, model="a") for i in range(10)])
    usage_rollup(now=NOW)
    usage_rollup(now=NOW)
    ingest(
        *[cloud_event(i, type="llm", tokens=1, model="a") for i in range(5, 15)]
    )  # 5 new, 5 duplicates
    usage_rollup(now=NOW)
    usage_rollup(now=NOW)
    assert UsageBucket.objects.filter(meter=meter).aggregate(
        n=Sum("event_count"), v=Sum("value_sum")
    ) == {
        "n": 15,
        "v": Decimal(15),
    }


@pytest.mark.django_db(transaction=True)
def test_late_events_update_their_old_buckets(ingest):
    meter = tokens_meter()
    ingest(cloud_event(1, type="llm", time="2026-10-05T08:15:00Z", tokens=3, model="a"))
    usage_rollup(now=NOW)
    ingest(cloud_event(2, type="llm", time="2026-10-05T08:45:00Z", tokens=4, model="a"))
    usage_rollup(now=NOW)
    bucket = UsageBucket.objects.get(meter=meter)
    assert (bucket.event_count, bucket.value_sum) == (2, Decimal(7))


@pytest.mark.django_db(transaction=True)
def test_min_max_latest_and_avg_stay_exact_across_runs(ingest):
    meter = tokens_meter(
        key="latency",
        event_type="request",
        aggregation="LATEST",
        value_property="$.ms",
        group_by={},
    )
    ingest(
        cloud_event(1, time="2026-11-01T10:10:00Z", ms=40),
        cloud_event(2, time="2026-11-01T10:20:00Z", ms="12.5"),
    )
    usage_rollup(now=NOW)
    ingest(
        cloud_event(3, time="2026-11-01T10:05:00Z", ms=100),  # late, but not the latest
        cloud_event(4, time="2026-11-01T10:50:00Z", ms=7),
        cloud_event(5, time="2026-11-01T10:55:00Z", ms="not a number"),
        cloud_event(6, time="2026-11-01T10:56:00Z"),
    )
    usage_rollup(now=NOW)
    b = UsageBucket.objects.get(meter=meter)
    assert (b.event_count, b.value_count, b.value_sum) == (6, 4, Decimal("159.5"))
    assert (b.value_min, b.value_max) == (Decimal(7), Decimal(100))
    assert (b.latest_value, b.latest_time) == (
        Decimal(7),
        datetime(2026, 11, 1, 10, 50, tzinfo=UTC),
    )
    assert (b.first_time, b.last_time) == (
        datetime(2026, 11, 1, 10, 5, tzinfo=UTC),
        datetime(2026, 11, 1, 10, 56, tzinfo=UTC),
    )


@pytest.mark.django_db(transaction=True)
def test_unique_counts_keep_distinct_values_not_hourly_sums(ingest):
    meter = meter_create(
        key="users", event_type="request", aggregation="UNIQUE_COUNT", value_property="$.user"
    )
    ingest(
        cloud_event(1, time="2026-11-01T10:00:00Z", user="u1"),
        cloud_event(2, time="2026-11-01T10:30:00Z", user="u1"),
        cloud_event(3, time="2026-11-01T11:00:00Z", user="u1"),
        cloud_event(4, time="2026-11-01T11:00:00Z", user="u2"),
    )
    usage_rollup(now=NOW)
    assert unique_values(meter) == {
        ("acme-gw", "2026-11-01T10:00:00+00:00", None): ["u1"],
        ("acme-gw", "2026-11-01T11:00:00+00:00", None): ["u1", "u2"],
    }
    assert month_unique_count(meter) == 2  # the month's exact unique count, not 1 + 2


@pytest.mark.django_db(transaction=True)
def test_unique_values_of_a_bucket_merge_across_incremental_runs(ingest):
    meter = meter_create(
        key="users", event_type="request", aggregation="UNIQUE_COUNT", value_property="$.user"
    )
    ingest(
        cloud_event(1, time="2026-11-01T10:00:00Z", user="u2"),
        cloud_event(2, time="2026-11-01T10:10:00Z", user="u1"),
    )
    usage_rollup(now=NOW)
    ingest(
        cloud_event(3, time="2026-11-01T10:20:00Z", user="u3"),
        cloud_event(4, time="2026-11-01T10:30:00Z", user="u1"),  # already in the bucket
        cloud_event(5, time="2026-11-01T12:00:00Z", user="u2"),  # a new bucket
    )
    usage_rollup(now=NOW)
    ingest(cloud_event(6, time="2026-11-01T10:40:00Z"))  # no value: counted, adds none
    usage_rollup(now=NOW)
    assert unique_values(meter) == {
        ("acme-gw", "2026-11-01T10:00:00+00:00", None): ["u1", "u2", "u3"],
        ("acme-gw", "2026-11-01T12:00:00+00:00", None): ["u2"],
    }
    assert UsageBucket.objects.filter(meter=meter).aggregate(n=Sum("event_count"))["n"] == 6
    assert month_unique_count(meter) == 3


@pytest.mark.django_db(transaction=True)
def test_returning_users_are_counted_as_events_but_not_as_new_values(ingest):
    meter = meter_create(
        key="users", event_type="request", aggregation="UNIQUE_COUNT", value_property="$.user"
    )
    ingest(
        cloud_event(1, time="2026-11-01T10:00:00Z", user="u2"),
        cloud_event(2, time="2026-11-01T10:10:00Z", user="u1"),
    )
    usage_rollup(now=NOW)
    ingest(
        cloud_event(3, time="2026-11-01T10:05:00Z", user="u1"),  # values all in the bucket
        cloud_event(4, time="2026-11-01T10:50:00Z", user="u2"),
    )
    usage_rollup(now=NOW)
    bucket = UsageBucket.objects.get(meter=meter)
    assert bucket.unique_values == ["u1", "u2"]
    assert (bucket.event_count, bucket.last_time) == (4, datetime(2026, 11, 1, 10, 50, tzinfo=UTC))
    assert month_unique_count(meter) == 2


@pytest.mark.django_db(transaction=True)
def test_unique_values_follow_their_events_when_a_consumer_is_reattributed(ingest):
    acme, globex = CustomerFactory(key="acme"), CustomerFactory(key="globex")
    meter = meter_create(
        key="users", event_type="request", aggregation="UNIQUE_COUNT", value_property="$.user"
    )
    ingest(
        cloud_event(1, subject="shared", time="2026-11-01T10:10:00Z", user="u1"),
        cloud_event(2, subject="shared", time="2026-11-01T10:40:00Z", user="u2"),
        cloud_event(3, subject="shared", time="2026-11-01T10:50:00Z", user="u1"),
        cloud_event(4, subject="shared", time="2026-11-02T09:00:00Z", user="u3"),
    )
    usage_rollup(now=NOW)
    assert unique_values(meter) == {
        ("shared", "2026-11-01T10:00:00+00:00", None): ["u1", "u2"],
        ("shared", "2026-11-02T09:00:00+00:00", None): ["u3"],
    }
    consumer_mapping_create(
        consumer_key="shared", customer=acme, valid_from=datetime(2026, 11, 1, tzinfo=UTC)
    )
    consumer_key_move(
        consumer_key="shared", to_customer=globex, at=datetime(2026, 11, 1, 10, 30, tzinfo=UTC)
    )
    usage_rollup(now=NOW)
    assert unique_values(meter) == {
        ("shared", "2026-11-01T10:00:00+00:00", "acme"): ["u1"],
        ("shared", "2026-11-01T10:00:00+00:00", "globex"): ["u1", "u2"],
        ("shared", "2026-11-02T09:00:00+00:00", "globex"): ["u3"],
    }
    assert month_unique_count(meter, customers=[acme]) == 1
    assert month_unique_count(meter, customers=[globex]) == 3
    assert month_unique_count(meter, customers=[acme, globex]) == 3


@pytest.mark.django_db(transaction=True)
def test_a_new_meter_rolls_up_events_stored_before_it_existed(ingest):
    ingest(*[cloud_event(i, type="llm", tokens=2, model="a") for i in range(3)])
    usage_rollup(now=NOW)
    meter = tokens_meter()
    usage_rollup(now=NOW)
    assert UsageBucket.objects.get(meter=meter).value_sum == Decimal(6)


@pytest.mark.django_db(transaction=True)
def test_events_are_attributed_by_their_own_time_and_reattributed_when_mappings_change(ingest):
    acme, globex = CustomerFactory(key="acme"), CustomerFactory(key="globex")
    meter = tokens_meter(group_by={})
    ingest(
        cloud_event(1, type="llm", subject="shared", time="2026-11-01T10:10:00Z", tokens=1),
        cloud_event(2, type="llm", subject="shared", time="2026-11-01T10:40:00Z", tokens=10),
        cloud_event(3, type="llm", subject="shared", time="2026-11-02T09:00:00Z", tokens=100),
    )
    usage_rollup(now=NOW)
    assert {k[3] for k in bucket_totals(meter)} == {None}  # unmapped: kept, unattributed

    consumer_mapping_create(
        consumer_key="shared", customer=acme, valid_from=datetime(2026, 11, 1, tzinfo=UTC)
    )
    consumer_key_move(
        consumer_key="shared", to_customer=globex, at=datetime(2026, 11, 1, 10, 30, tzinfo=UTC)
    )
    result = usage_rollup(now=NOW)
    assert result.mapping_changes == 3  # the new mapping; the move closes one and opens one
    per_customer = {}
    for b in UsageBucket.objects.filter(meter=meter).select_related("customer"):
        key = b.customer.key if b.customer else None
        per_customer[key] = per_customer.get(key, 0) + b.value_sum
    assert per_customer == {"acme": Decimal(1), "globex": Decimal(110)}
    usage_rollup(now=NOW)  # nothing left to apply, nothing changes
    assert UsageBucket.objects.filter(meter=meter).aggregate(v=Sum("value_sum"))["v"] == Decimal(
        111
    )


@pytest.mark.django_db(transaction=True)
def test_an_ingest_that_commits_after_a_later_one_is_never_missed():
    """T1 stores an event and stays open; T2 stores one and commits; a rollup runs; then
    T1 commits. A watermark over ids or ingest times would skip T1's event for good."""
    from metering.ingest import events_parse
    from metering.services import events_ingest

    meter = tokens_meter(group_by={})

    def parsed(i):
        import json

        return events_parse(
            json.dumps([cloud_event(i, type="llm", tokens=1)]).encode(), batch=True, max_events=10
        ).events

    t1_stored, t1_commit = threading.Event(), threading.Event()

    def slow_ingest():
        with transaction.atomic():
            events_ingest(events=parsed("early"), received_at=NOW)
            t1_stored.set()
            t1_commit.wait(10)
        connection.close()

    t1 = threading.Thread(target=slow_ingest)
    t1.start()
    assert t1_stored.wait(10)
    events_ingest(events=parsed("later"), received_at=NOW)  # T2: commits first
    usage_rollup(now=NOW)
    counted_before = (
        UsageBucket.objects.filter(meter=meter).aggregate(n=Sum("event_count"))["n"] or 0
    )
    assert counted_before <= 1
    t1_commit.set()
    t1.join()
    usage_rollup(now=NOW)
    assert UsageBucket.objects.filter(meter=meter).aggregate(n=Sum("event_count"))["n"] == 2


@pytest.mark.django_db(transaction=True)
def test_two_workers_rolling_up_at_once_count_every_event_exactly_once(ingest):
    meter = tokens_meter()
    for batch in range(4):
        ingest(
            *[
                cloud_event(f"{batch}-{i}", type="llm", tokens=1, model=f"m{i % 3}")
                for i in range(500)
            ]
        )
    barrier = threading.Barrier(2)
    errors = []

    def worker():
        try:
            barrier.wait()
            for _ in range(3):
                usage_rollup(now=NOW)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert UsageBucket.objects.filter(meter=meter).aggregate(
        n=Sum("event_count"), v=Sum("value_sum")
    ) == {
        "n": 2000,
        "v": Decimal(2000),
    }


@pytest.mark.django_db(transaction=True)
def test_meters_are_rolled_up_at_once_and_two_such_runs_neither_deadlock_nor_double_count(
    ingest, settings
):
    # usage_rollup rolls METERING_ROLLUP_WORKERS meters up at once, each on its own
    # connection. Their usage-touch upserts meet on the same (customer, day) rows, taken in
    # one order so they never deadlock; two such runs at once still count each event once.
    from metering import rollup

    settings.METERING_ROLLUP_WORKERS = 3
    acme = CustomerFactory(key="acme")
    consumer_mapping_create(
        consumer_key="acme-gw", customer=acme, valid_from=datetime(2026, 1, 1, tzinfo=UTC)
    )
    meters = [
        tokens_meter(),
        meter_create(key="llm_calls", event_type="llm", aggregation="COUNT"),
        meter_create(
            key="llm_users", event_type="llm", aggregation="UNIQUE_COUNT", value_property="$.user"
        ),
    ]
    for batch in range(3):
        ingest(
            *[
                cloud_event(
                    f"{batch}-{i}", type="llm", subject="acme-gw", tokens=2, model=f"m{i % 2}",
                    user=f"u{i % 7}", time=f"2026-11-{1 + i % 20:02d}T{i % 24:02d}:00:00Z",
                )
                for i in range(300)
            ]
        )  # fmt: skip
    threads_seen: set[str] = set()
    meter_rollup = rollup.meter_rollup

    def noting_the_thread(**kwargs):
        threads_seen.add(threading.current_thread().name)
        return meter_rollup(**kwargs)

    rollup.meter_rollup = noting_the_thread
    errors = []

    def run():
        try:
            usage_rollup(now=NOW)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    try:
        runs = [threading.Thread(target=run) for _ in range(2)]
        for t in runs:
            t.start()
        for t in runs:
            t.join(60)
    finally:
        rollup.meter_rollup = meter_rollup
    assert not errors
    assert len({name for name in threads_seen if name.startswith("rollup")}) >= 2
    totals = {
        m.key: UsageBucket.objects.filter(meter=m).aggregate(n=Sum("event_count"))["n"]
        for m in meters
    }
    assert totals == {"llm_tokens": 900, "llm_calls": 900, "llm_users": 900}
    assert month_unique_count(meters[2], customers=[acme]) == 7
