"""The value check's caches: after every kind of change the next check answers as if
nothing were cached, and a warm check reads the database once (its usage statement).

These tests commit (``transaction=True``), as production does: the cache's generation
moves when a change's transaction commits, and a connection with uncommitted changes
never uses the cache, so tests inside one rolled-back transaction would not exercise it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import billing.entitlements.cache as entitlement_cache
from billing.catalog.services import (
    subscription_change_plan,
    subscription_create,
)
from billing.entitlements.context import EntitlementNotFound, entitlement_context_build_for_keys
from billing.entitlements.value import entitlement_context, entitlement_value_for_key
from billing.models import EntitlementOverride, Grant, Subscription
from customers.models import Customer
from customers.services import consumer_key_move, customer_update
from metering.services import feature_create, feature_update, meter_create
from metering.usage import usage_memories_clear
from tests.factories import ConsumerMappingFactory, CustomerFactory, PlanVersionFactory
from tests.metering.conftest import cloud_event

pytestmark = pytest.mark.django_db(transaction=True)

NOV = datetime(2026, 11, 1, tzinfo=UTC)
AT = "2026-11-20T00:00:00Z"


@pytest.fixture(autouse=True)
def _fresh_memories():
    from core import services

    entitlement_cache.forget_local()
    services._local.clear()
    usage_memories_clear()
    yield


def _plan(key: str, limit: int):
    return PlanVersionFactory(
        key=key,
        name=key.title(),
        rate_cards=(),
        entitlements=(
            {"feature": "api_calls", "type": "metered", "limit": limit, "hard": True},
            {"feature": "sso", "type": "boolean", "enabled": key == "pro"},
        ),
    )


@pytest.fixture
def world(ingest):
    meter = meter_create(key="api_requests", event_type="request", aggregation="COUNT")
    feature_create(key="api_calls", meter=meter)
    feature_create(key="sso", meter=meter)
    free, pro = _plan("free", 10), _plan("pro", 1000)
    acme = CustomerFactory(key="acme")
    dev = CustomerFactory(key="acme-dev", parent=acme)
    globex = CustomerFactory(key="globex")
    subscription_create(customer=acme, plan_version=free, start=NOV)
    subscription_create(customer=globex, plan_version=free, start=NOV)
    ConsumerMappingFactory(consumer_key="acme-gw", customer=acme, valid_from=NOV)
    ConsumerMappingFactory(consumer_key="dev-gw", customer=dev, valid_from=NOV)
    ConsumerMappingFactory(consumer_key="globex-gw", customer=globex, valid_from=NOV)
    ingest(
        *[
            cloud_event(f"e{i}", subject=subject, time=f"2026-11-0{2 + i % 5}T10:{i:02d}:00Z")
            for i, subject in enumerate(["acme-gw"] * 4 + ["dev-gw"] * 3 + ["globex-gw"] * 2)
        ]
    )
    return {"free": free, "pro": pro, "acme": acme, "dev": dev, "globex": globex}


def check(api, customer="acme", feature="api_calls", at=AT) -> dict:
    response = api.get(f"/api/v1/customers/{customer}/entitlements/{feature}/value", {"time": at})
    assert response.status_code == 200, response.content
    return response.json()


def uncached(customer="acme", feature="api_calls", at=AT) -> dict:
    """The answer computed from the database alone, as the API renders it."""
    import json

    from core.api.renderers import ExactNumberJSONRenderer

    value = entitlement_value_for_key(
        customer_key=customer,
        feature_key=feature,
        at=datetime.fromisoformat(at.replace("Z", "+00:00")),
        cached=False,
    )
    body = (
        value.as_openmeter()
        if value
        else {"hasAccess": False, "balance": 0, "usage": 0, "overage": 0}
    )
    return json.loads(ExactNumberJSONRenderer().render(body))


def test_a_cached_answer_equals_an_uncached_one_and_a_warm_check_reads_the_database_once(
    api, world
):
    assert check(api) == uncached() == {"hasAccess": True, "balance": 3, "usage": 7, "overage": 0}
    assert check(api, "acme-dev") == uncached("acme-dev")
    assert check(api, feature="sso") == uncached(feature="sso") == {"hasAccess": False}
    expected = uncached()
    with CaptureQueriesContext(connection) as queries:
        assert check(api) == expected
    # the API key and the context come from the cache: only usage is read
    assert len(queries.captured_queries) == 1, [q["sql"][:80] for q in queries]
    assert "metering_event" in queries.captured_queries[0]["sql"]
    with CaptureQueriesContext(connection) as queries:
        check(api, feature="sso")
    assert len(queries.captured_queries) == 0  # a boolean entitlement reads nothing


def test_an_override_changes_the_next_check(api, world):
    assert check(api)["balance"] == 3
    response = api.put(
        "/api/v1/customers/acme/entitlements/override",
        {"feature": "api_calls", "type": "metered", "limit": "50", "hard": True},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert check(api) == uncached() == {"hasAccess": True, "balance": 43, "usage": 7, "overage": 0}
    EntitlementOverride.objects.filter(customer=world["acme"]).delete()
    assert check(api) == uncached() == {"hasAccess": True, "balance": 3, "usage": 7, "overage": 0}


def test_a_grant_counts_from_the_next_check_and_stops_counting_once_voided(api, world):
    assert check(api, "acme-dev")["balance"] == 3
    response = api.post(
        "/api/v1/customers/acme-dev/grants",
        {"feature": "api_calls", "amount": "5", "effective_at": "2026-11-10T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert check(api, "acme-dev") == uncached("acme-dev")
    assert check(api, "acme-dev")["balance"] == 8
    assert api.post(f"/api/v1/grants/{response.json()['id']}/void").status_code == 200
    assert check(api, "acme-dev") == uncached("acme-dev")
    assert check(api, "acme-dev")["balance"] == 3


def test_a_plan_change_and_a_cancellation_change_the_next_check(api, world):
    assert check(api)["balance"] == 3
    subscription = Subscription.objects.get(customer=world["acme"])
    subscription_change_plan(
        subscription=subscription,
        plan_version=world["pro"],
        at=datetime(2026, 11, 15, tzinfo=UTC),
        timing="immediately",
    )
    assert check(api) == uncached() == {"hasAccess": True, "balance": 993, "usage": 7, "overage": 0}
    assert check(api, feature="sso") == {"hasAccess": True}
    # a check before the change still sees the old plan
    assert check(api, at="2026-11-14T00:00:00Z")["balance"] == 3
    Subscription.objects.filter(customer=world["acme"]).delete()
    assert check(api) == uncached() == {"hasAccess": False, "balance": 0, "usage": 0, "overage": 0}


def test_a_plan_version_edited_in_place_changes_the_next_check(api, world):
    assert check(api, "globex")["balance"] == 8
    version = world["free"]
    version.entitlements = [{"feature": "api_calls", "type": "metered", "limit": 20, "hard": True}]
    version.save()
    assert check(api, "globex") == uncached("globex")
    assert check(api, "globex")["balance"] == 18


def test_a_consumer_key_moved_to_another_customer_moves_its_usage_at_once(api, world):
    assert check(api)["usage"] == 7 and check(api, "globex")["usage"] == 2
    consumer_key_move(
        consumer_key="dev-gw", to_customer=world["globex"], at=datetime(2026, 11, 1, tzinfo=UTC)
    )
    assert check(api) == uncached() and check(api, "globex") == uncached("globex")
    assert check(api)["usage"] == 4 and check(api, "globex")["usage"] == 5


def test_a_subsidiary_moved_to_its_own_account_leaves_its_parents_check(api, world):
    assert check(api)["usage"] == 7 and check(api, "acme-dev")["usage"] == 7
    customer_update(customer=Customer.objects.get(key="acme-dev"), bill_to_parent=False)
    assert check(api) == uncached() and check(api)["usage"] == 4
    # billed on itself now, and without a subscription: no entitlement
    assert (
        check(api, "acme-dev")
        == uncached("acme-dev")
        == {
            "hasAccess": False,
            "balance": 0,
            "usage": 0,
            "overage": 0,
        }
    )


def test_a_customer_or_feature_created_after_a_miss_is_found_at_once(api, world):
    assert api.get("/api/v1/customers/initech/entitlements/api_calls/value").status_code == 404
    assert api.get("/api/v1/customers/acme/entitlements/seats/value").status_code == 404
    from metering.models import Meter

    CustomerFactory(key="initech")
    feature_create(key="seats", meter=Meter.objects.get(key="api_requests"))
    assert check(api, "initech") == uncached("initech")
    assert check(api, feature="seats") == uncached(feature="seats")


def test_a_feature_whose_filters_change_is_counted_anew(api, world, ingest):
    from metering.models import Feature, Meter

    meter = Meter.objects.get(key="api_requests")
    meter.group_by = {"status": "$.status"}  # no buckets yet: the meter may still change
    meter.save()
    ingest(cloud_event("s1", subject="acme-gw", time="2026-11-03T09:00:00Z", status=500))
    assert check(api)["usage"] == 8
    feature_update(feature=Feature.objects.get(key="api_calls"), filters={"status": ["500"]})
    assert check(api) == uncached() and check(api)["usage"] == 1


def test_a_revoked_api_key_is_refused_on_its_next_request(api_client_for, world):
    from core.services import api_key_revoke

    client = api_client_for("read")
    assert check(client)["usage"] == 7
    with CaptureQueriesContext(connection) as queries:
        check(client)
    assert not [q for q in queries if "core_apikey" in q["sql"]]  # authenticated from cache
    api_key_revoke(api_key=client.api_key, now=timezone.now())
    response = client.get("/api/v1/customers/acme/entitlements/api_calls/value")
    assert response.status_code == 401


def test_a_check_inside_the_writing_transaction_sees_its_own_uncommitted_change(api, world):
    at = datetime(2026, 11, 20, tzinfo=UTC)
    assert (
        entitlement_value_for_key(customer_key="acme", feature_key="api_calls", at=at).balance == 3
    )
    with transaction.atomic():
        Grant.objects.create(
            customer=world["acme"],
            feature_id=entitlement_context(customer_key="acme", feature_key="api_calls").feature.pk,
            amount=Decimal(4),
            effective_at=NOV,
        )
        assert entitlement_cache.pending()
        value = entitlement_value_for_key(customer_key="acme", feature_key="api_calls", at=at)
        assert value.balance == 7
        transaction.set_rollback(True)
    assert not entitlement_cache.pending()
    # rolled back: nothing of it was cached
    assert (
        entitlement_value_for_key(customer_key="acme", feature_key="api_calls", at=at).balance == 3
    )


def test_a_context_read_before_a_change_committed_is_never_served_after_it(world):
    """The race the generation closes: a check reads the generation, then the database
    (before a change commits), and stores what it read after the change has committed.
    The next check must not get that stale context."""
    stale = {}

    def slow_build(*, customer_key, feature_key):
        context = entitlement_context_build_for_keys(
            customer_key=customer_key, feature_key=feature_key
        )
        if not stale:  # meanwhile, another process commits a change
            stale["context"] = context
            EntitlementOverride.objects.create(
                customer=world["acme"], feature=context.feature, limit=Decimal(99), hard=True
            )
        return context

    first = entitlement_cache.context_cached(
        customer_key="acme", feature_key="api_calls", build=slow_build
    )
    assert first.override is None  # what it read, before the change
    entitlement_cache.forget_local()  # as another process would find it: only in Redis
    again = entitlement_context(customer_key="acme", feature_key="api_calls")
    assert again.override is not None and again.override.limit == Decimal(99)


def test_a_generation_lost_from_redis_never_returns_to_an_old_number():
    from django.core.cache import cache

    before = entitlement_cache.generation()
    entitlement_cache.bump()
    assert entitlement_cache.generation() == before + 1
    cache.delete(entitlement_cache._generation_key())
    assert entitlement_cache.generation() > before + 1


def test_unknown_keys_are_remembered_without_a_query(api, world):
    with pytest.raises(EntitlementNotFound):
        entitlement_context(customer_key="nobody", feature_key="api_calls")
    with CaptureQueriesContext(connection) as queries, pytest.raises(EntitlementNotFound):
        entitlement_context(customer_key="nobody", feature_key="api_calls")
    assert len(queries.captured_queries) == 0


def test_a_rollup_between_checks_changes_no_answer(api, world, ingest):
    from metering.services import usage_rollup

    assert check(api) == uncached()
    usage_rollup(now=datetime(2026, 11, 21, tzinfo=UTC))
    assert check(api) == uncached() == {"hasAccess": True, "balance": 3, "usage": 7, "overage": 0}
    ingest(cloud_event("late", subject="acme-gw", time="2026-11-02T03:00:00Z"))
    assert check(api)["usage"] == 8
    usage_rollup(now=datetime(2026, 11, 21, tzinfo=UTC))
    assert check(api) == uncached() and check(api)["usage"] == 8
    assert check(api, at=(NOV + timedelta(days=40)).isoformat())["usage"] == 0


def test_the_answer_is_the_same_bytes_as_ever(api, world):
    metered = api.get("/api/v1/customers/acme/entitlements/api_calls/value", {"time": AT})
    boolean = api.get("/api/v1/customers/acme/entitlements/sso/value", {"time": AT})

    assert metered["Content-Type"] == "application/json"
    assert metered.content == b'{"hasAccess":true,"balance":3,"usage":7,"overage":0}'
    assert boolean.content == b'{"hasAccess":false}'


def test_a_check_on_a_connection_the_server_closed_is_answered_on_a_new_one(api, world):
    """Connections persist without a health check per request: after PostgreSQL
    restarts (here: the server ends this connection), the check reconnects and answers."""
    import psycopg

    expected = check(api)
    pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"}) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])

    assert check(api) == expected
    assert connection.connection.info.backend_pid != pid
