from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.catalog.services import subscription_create
from billing.models import EntitlementOverride, Grant
from customers.models import Customer
from metering.services import feature_create, meter_create
from tests.factories import (
    ConsumerMappingFactory,
    CustomerFactory,
    PlanVersionFactory,
    SubscriptionFactory,
)
from tests.metering.conftest import cloud_event

NOV = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def free(db):
    meter = meter_create(key="api_requests", event_type="request", aggregation="COUNT")
    calls = feature_create(key="api_calls", meter=meter)
    feature_create(key="sso", meter=meter)
    feature_create(key="rate_config", meter=meter)
    version = PlanVersionFactory(
        free=True,
        feature=calls,
        entitlements=(
            {
                "feature": "api_calls",
                "type": "metered",
                "limit": 5,
                "period": "monthly",
                "hard": True,
                "thresholds": [80, 100],
            },
            {"feature": "sso", "type": "boolean", "enabled": False},
            {"feature": "rate_config", "type": "static", "config": {"rps": 10}},
        ),
    )
    parent = CustomerFactory(key="acme")
    child = CustomerFactory(key="acme-dev", parent=parent)
    SubscriptionFactory(customer=parent, plan_version=version, start=NOV)
    ConsumerMappingFactory(consumer_key="acme-gw", customer=parent, valid_from=NOV)
    ConsumerMappingFactory(consumer_key="acme-dev-gw", customer=child, valid_from=NOV)
    return calls


def value(api, customer, feature, time=None):
    params = {"time": time} if time else {}
    response = api.get(f"/api/v1/customers/{customer}/entitlements/{feature}/value", params)
    assert response.status_code == 200, response.content
    return response.json()


def send(ingest, n, subject="acme-gw", start=NOV + timedelta(days=1), prefix="e"):
    ingest(
        *[
            cloud_event(
                f"{prefix}{subject}{i}",
                subject=subject,
                time=(start + timedelta(minutes=i)).isoformat(),
            )
            for i in range(n)
        ]
    )


def test_a_hard_limit_cuts_access_at_the_limit_counting_events_not_yet_rolled_up(api, ingest, free):
    at = "2026-11-10T00:00:00Z"
    assert value(api, "acme", "api_calls", at) == {
        "hasAccess": True,
        "balance": 5,
        "usage": 0,
        "overage": 0,
    }
    send(ingest, 3)
    send(ingest, 1, subject="acme-dev-gw")  # a subsidiary's usage counts for the account
    assert value(api, "acme", "api_calls", at) == {
        "hasAccess": True,
        "balance": 1,
        "usage": 4,
        "overage": 0,
    }
    send(ingest, 3, prefix="x")
    assert value(api, "acme", "api_calls", at) == {
        "hasAccess": False,
        "balance": 0,
        "usage": 7,
        "overage": 2,
    }
    assert (
        value(api, "acme-dev", "api_calls", at)["hasAccess"] is False
    )  # checked on the billing account
    assert (
        value(api, "acme", "api_calls", "2026-12-02T00:00:00Z")["usage"] == 0
    )  # next usage period


def test_grants_add_units_and_only_rollover_grants_outlive_their_period(api, ingest, free):
    send(ingest, 7)
    Grant.objects.create(
        customer=Customer.objects.get(key="acme"),
        feature=free,
        amount=Decimal(4),
        effective_at=NOV + timedelta(days=2),
        rollover=True,
    )
    assert value(api, "acme", "api_calls", "2026-11-10T00:00:00Z") == {
        "hasAccess": True,
        "balance": 2,
        "usage": 7,
        "overage": 0,
    }
    # December: the rollover grant keeps what November's overage (2) left: 2 units
    assert value(api, "acme", "api_calls", "2026-12-10T00:00:00Z") == {
        "hasAccess": True,
        "balance": 7,
        "usage": 0,
        "overage": 0,
    }


def test_soft_limits_keep_access_and_report_overage(api, ingest, free):
    from customers.models import Customer

    EntitlementOverride.objects.create(
        customer=Customer.objects.get(key="acme"), feature=free, limit=Decimal(2), hard=False
    )
    send(ingest, 3)
    assert value(api, "acme", "api_calls", "2026-11-10T00:00:00Z") == {
        "hasAccess": True,
        "balance": 0,
        "usage": 3,
        "overage": 1,
    }


def test_boolean_and_static_entitlements(api, free):
    assert value(api, "acme", "sso") == {"hasAccess": False}
    assert value(api, "acme", "rate_config") == {"hasAccess": True, "config": {"rps": 10}}


def test_unknown_customer_or_feature_is_404_and_no_entitlement_is_no_access(api, free):
    assert api.get("/api/v1/customers/nobody/entitlements/api_calls/value").status_code == 404
    assert api.get("/api/v1/customers/acme/entitlements/nothing/value").status_code == 404
    CustomerFactory(key="loner")
    assert value(api, "loner", "api_calls")["hasAccess"] is False
    assert (
        api.get("/api/v1/customers/acme/entitlements/api_calls/value", {"time": "soon"}).status_code
        == 400
    )


def test_bulk_checks_answer_each_pair(api, ingest, free):
    send(ingest, 2)
    response = api.post(
        "/api/v1/entitlements/check",
        {
            "checks": [
                {"customer": "acme", "feature": "api_calls", "time": "2026-11-10T00:00:00Z"},
                {"customer": "acme", "feature": "sso"},
                {"customer": "ghost", "feature": "sso"},
            ]
        },
        format="json",
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["usage"] == 2 and results[1]["hasAccess"] is False and "error" in results[2]
    listing = api.get(
        "/api/v1/customers/acme-dev/entitlements", {"time": "2026-11-10T00:00:00Z"}
    ).json()
    assert listing["billingAccount"] == "acme"
    assert [e["feature"] for e in listing["entitlements"]] == ["api_calls", "rate_config", "sso"]


# -- the narrow usage statement against the reference -------------------------------
#
# The value check reads usage with a statement of its own (metering.usage
# .feature_quantities): per-process memories of past days' bucket sums, of the watermark and
# of how old the events not rolled up are, consumer keys taken from the context. These
# tests hold it to metering.usage.feature_usage, the reference, answer for answer, across
# aggregations, filters, time zones, partial hours, events not rolled up (recent and
# late), rollups in between, consumer keys that change hands and rollover grants.


def _reset_usage_memories():
    from metering.usage import usage_memories_clear

    usage_memories_clear()


@pytest.fixture
def usage_world(transactional_db, ingest):
    """Three meters and six features, a Kolkata account (periods start at 10:47 local,
    05:17 UTC: inside an hour) with a subsidiary, and a consumer key that moves to
    another customer in the middle of a period."""
    from billing.models import Grant
    from customers.services import consumer_key_move

    _reset_usage_memories()
    requests = meter_create(
        key="requests",
        event_type="request",
        aggregation="COUNT",
        group_by={"route": "$.route", "status": "$.status"},
    )
    tokens = meter_create(
        key="tokens",
        event_type="llm",
        aggregation="SUM",
        value_property="$.tokens",
        group_by={"model": "$.model"},
    )
    latency = meter_create(
        key="latency", event_type="timing", aggregation="AVG", value_property="$.ms"
    )
    features = {
        "calls_ok": feature_create(key="calls_ok", meter=requests, filters={"status": ["200"]}),
        "calls": feature_create(key="calls", meter=requests),
        "tokens": feature_create(key="tokens", meter=tokens),
        "gpt_tokens": feature_create(key="gpt_tokens", meter=tokens, filters={"model": ["gpt"]}),
        "latency": feature_create(key="latency", meter=latency),
        "a_missing": feature_create(
            key="a_missing", meter=requests, filters={"route": ["/a"], "status": ["404", "410"]}
        ),
    }
    templates = tuple(
        {"feature": key, "type": "metered", "limit": limit, "period": "monthly", "hard": True}
        for key, limit in [
            ("calls_ok", 40),
            ("calls", 70),
            ("tokens", 5000),
            ("gpt_tokens", 900),
            ("latency", 100),
            ("a_missing", 1),
        ]
    )
    version = PlanVersionFactory(
        key="metered", name="Metered", rate_cards=(), entitlements=templates
    )
    acme = CustomerFactory(key="acme", timezone="Asia/Kolkata")
    dev = CustomerFactory(key="acme-dev", parent=acme, timezone="Asia/Kolkata")
    globex = CustomerFactory(key="globex")
    subscription_create(
        customer=acme, plan_version=version, start=datetime(2026, 10, 3, 5, 17, tzinfo=UTC)
    )
    since = datetime(2026, 9, 1, tzinfo=UTC)
    ConsumerMappingFactory(consumer_key="acme-gw", customer=acme, valid_from=since)
    ConsumerMappingFactory(consumer_key="dev-gw", customer=dev, valid_from=since)
    ConsumerMappingFactory(consumer_key="globex-gw", customer=globex, valid_from=since)
    consumer_key_move(
        consumer_key="dev-gw", to_customer=globex, at=datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
    )
    Grant.objects.create(
        customer=acme,
        feature=features["tokens"],
        amount=Decimal(3000),
        effective_at=datetime(2026, 10, 10, tzinfo=UTC),
        rollover=True,
        priority=1,
    )
    Grant.objects.create(
        customer=acme,
        feature=features["calls"],
        amount=Decimal(5),
        effective_at=datetime(2026, 11, 5, tzinfo=UTC),
        expires_at=datetime(2026, 11, 25, tzinfo=UTC),
    )
    return features


def _random_events(seed: int, count: int, start: datetime, span: timedelta, prefix: str):
    import random

    from tests.metering.conftest import cloud_event

    rng = random.Random(seed)
    events = []
    for i in range(count):
        at = start + timedelta(seconds=rng.randrange(int(span.total_seconds())))
        subject = rng.choice(["acme-gw", "dev-gw", "globex-gw", "stranger-gw"])
        kind = rng.choice(["request", "request", "llm", "timing"])
        data: dict = {}
        if kind == "request":
            data = {"route": rng.choice(["/a", "/b"]), "status": rng.choice([200, 200, 404])}
        elif kind == "llm":
            data = {"model": rng.choice(["gpt", "claude"]), "tokens": rng.randrange(1, 400)}
            if rng.random() < 0.1:
                data["tokens"] = "n/a"  # not a number: counted, no value
        else:
            data = {"ms": str(Decimal(rng.randrange(1, 10_000)) / 100)}
        events.append(
            cloud_event(f"{prefix}{i}", type=kind, subject=subject, time=at.isoformat(), **data)
        )
    return events


INSTANTS = [
    datetime(2026, 11, 3, 5, 17, tzinfo=UTC),  # a period's first instant
    datetime(2026, 11, 3, 5, 40, tzinfo=UTC),  # inside its first, partial hour
    datetime(2026, 11, 3, 7, 0, tzinfo=UTC),  # on an hour
    datetime(2026, 11, 20, 12, 45, 30, tzinfo=UTC),  # after the key moved
    datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC),
    datetime(2026, 12, 2, 1, 0, tzinfo=UTC),  # the next period
    datetime(2026, 12, 9, 0, 0, tzinfo=UTC),
]


def _assert_narrow_equals_reference(features):
    from billing.entitlements.context import entitlement_context_build_for_keys
    from billing.entitlements.value import entitlement_value_from
    from core.api.renderers import ExactNumberJSONRenderer

    render = ExactNumberJSONRenderer().render
    compared = 0
    for customer in ("acme", "acme-dev"):
        for key in features:
            context = entitlement_context_build_for_keys(customer_key=customer, feature_key=key)
            for at in INSTANTS:
                narrow = entitlement_value_from(context=context, at=at)
                reference = entitlement_value_from(context=context, at=at, narrow=False)
                assert narrow == reference, (customer, key, at)
                assert render(narrow.as_openmeter()) == render(reference.as_openmeter())
                compared += 1
    return compared


def _roll_up():
    from metering.services import usage_rollup

    return usage_rollup(now=datetime(2026, 12, 10, tzinfo=UTC)).meters


@pytest.mark.django_db(transaction=True)
def test_the_narrow_usage_statement_answers_as_the_reference_through_rollups_and_late_events(
    usage_world, ingest
):
    oct_25 = datetime(2026, 10, 25, tzinfo=UTC)
    ingest(*_random_events(1, 600, oct_25, timedelta(days=50), "a"))
    _roll_up()
    ingest(*_random_events(2, 150, oct_25, timedelta(days=50), "b"))  # not rolled up
    assert _assert_narrow_equals_reference(usage_world) == 84
    # again: the past days' sums now come from memory, checked against the touches
    _assert_narrow_equals_reference(usage_world)
    # a rollup moves the watermark and touches past days; the memories must notice
    _roll_up()
    _assert_narrow_equals_reference(usage_world)
    # late events for long-past hours, not rolled up, after the memories were taken
    ingest(*_random_events(3, 80, oct_25, timedelta(days=30), "c"))
    _assert_narrow_equals_reference(usage_world)
    _roll_up()
    _assert_narrow_equals_reference(usage_world)


@pytest.mark.django_db(transaction=True)
def test_an_event_accepted_a_moment_ago_counts_at_once_whatever_its_time(usage_world, ingest):
    from billing.entitlements.value import entitlement_value_for_key
    from tests.metering.conftest import cloud_event

    at = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)
    ingest(*_random_events(4, 300, datetime(2026, 11, 3, 6, tzinfo=UTC), timedelta(days=24), "d"))
    _roll_up()

    def usage():
        return entitlement_value_for_key(customer_key="acme", feature_key="calls", at=at).usage

    before = usage()
    # one in the current hour, one in a past hour of the period (late), none rolled up
    ingest(cloud_event("now1", subject="acme-gw", time="2026-11-27T12:29:59Z", status=200))
    assert usage() == before + 1
    ingest(cloud_event("late1", subject="dev-gw", time="2026-11-04T09:15:00Z", status=500))
    assert usage() == before + 2
    _roll_up()
    assert usage() == before + 2


def test_consumer_keys_and_filter_values_with_quotes_are_counted_as_written(api, ingest, free):
    ConsumerMappingFactory(
        consumer_key="o'brien'); DROP TABLE x;--", customer=Customer.objects.get(key="acme"),
        valid_from=NOV,
    )  # fmt: skip
    send(ingest, 2, subject="o'brien'); DROP TABLE x;--")
    send(ingest, 1)
    assert value(api, "acme", "api_calls", "2026-11-10T00:00:00Z")["usage"] == 3
