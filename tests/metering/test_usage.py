"""Feature usage over arbitrary ranges equals a direct computation over the raw events."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from metering.services import feature_create, meter_create, usage_rollup
from metering.usage import feature_usage
from tests.factories import ConsumerMappingFactory, CustomerFactory
from tests.metering.conftest import cloud_event

pytestmark = pytest.mark.django_db(transaction=True)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def events_for(subjects):
    """One event every 7 minutes over two days, values and users varying."""
    events, reference = [], []
    for i in range(0, 2 * 24 * 60, 7):
        subject = subjects[i % len(subjects)]
        t = T0 + timedelta(minutes=i, seconds=i % 60)
        tokens = (i * 37) % 101
        user = f"u{(i * 13) % 17}"
        model = "a" if i % 3 else "b"
        events.append(
            cloud_event(
                i,
                type="llm",
                subject=subject,
                time=t.isoformat(),
                tokens=tokens,
                user=user,
                model=model,
            )
        )
        reference.append((subject, t, Decimal(tokens), user, model))
    return events, reference


@pytest.fixture
def setup(ingest):
    acme, globex = CustomerFactory(key="acme"), CustomerFactory(key="globex")
    ConsumerMappingFactory(consumer_key="s-acme", customer=acme, valid_from=T0 - timedelta(days=1))
    ConsumerMappingFactory(
        consumer_key="s-globex", customer=globex, valid_from=T0 - timedelta(days=1)
    )
    events, reference = events_for(["s-acme", "s-globex", "s-nobody"])
    half = len(events) // 2
    ingest(*events[:half])
    meters = {
        agg: meter_create(
            key=f"m-{agg.lower()}",
            event_type="llm",
            aggregation=agg,
            value_property="$.user" if agg == "UNIQUE_COUNT" else "$.tokens",
            group_by={"model": "$.model"},
        )
        for agg in ["SUM", "COUNT", "UNIQUE_COUNT", "MIN", "MAX", "AVG", "LATEST"]
    }
    usage_rollup(now=T0)
    ingest(*events[half:])  # not rolled up: still counted
    features = {
        agg: feature_create(key=f"f-{agg.lower()}", meter=m, filters={"model": ["a"]})
        for agg, m in meters.items()
    }
    return {"acme": acme, "globex": globex}, reference, features


def expected(agg, rows):
    values = [r[2] for r in rows]
    if agg == "COUNT":
        return Decimal(len(rows))
    if not rows:
        return Decimal(0)
    return {
        "SUM": lambda: sum(values),
        "MIN": lambda: min(values),
        "MAX": lambda: max(values),
        "AVG": lambda: sum(values) / len(values),
        "LATEST": lambda: max(rows, key=lambda r: r[1])[2],
        "UNIQUE_COUNT": lambda: Decimal(len({r[3] for r in rows})),
    }[agg]()


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (T0, T0 + timedelta(days=1)),
        (
            T0 + timedelta(hours=5, minutes=30),
            T0 + timedelta(days=1, hours=5, minutes=30),
        ),  # Asia/Kolkata days
        (
            T0 + timedelta(hours=3, minutes=10),
            T0 + timedelta(hours=3, minutes=50),
        ),  # inside one hour
        (T0 + timedelta(hours=23, minutes=59, seconds=59), T0 + timedelta(days=2)),
    ],
)
def test_feature_usage_matches_the_raw_events_for_every_aggregation(setup, start, end):
    customers, reference, features = setup
    for agg, feature in features.items():
        ids = [customers["acme"].pk, customers["globex"].pk]
        usage = feature_usage(feature=feature, customer_ids=ids, start=start, end=end)
        rows = [
            r
            for r in reference
            if r[0] in ("s-acme", "s-globex") and start <= r[1] < end and r[4] == "a"
        ]
        assert usage.quantity == expected(agg, rows), agg
        for key in ("acme", "globex"):
            own = [r for r in rows if r[0] == f"s-{key}"]
            assert usage.by_customer.get(customers[key].pk, Decimal(0)) == expected(agg, own), (
                agg,
                key,
            )
