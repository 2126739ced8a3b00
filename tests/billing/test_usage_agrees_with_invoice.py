"""The entitlement check and the invoice read the same usage.

Both ask metering (``metering.usage``): the value check through ``feature_quantities``,
rating through ``feature_usage``. These tests put usage on an account and its subsidiary,
part of it rolled up and part not (events ingested after the last rollup, some of them
for long-past hours), and hold the value API's ``usage`` to what the upcoming invoice
bills for the same feature over the same range, for COUNT and SUM meters, with and
without dimension filters, and over random event sets.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import billing.entitlements.cache as entitlement_cache
from billing.catalog.services import subscription_create
from billing.catalog.upcoming import upcoming_invoice
from billing.entitlements.value import entitlement_value_for_key
from billing.models import LineKind
from customers.models import Customer
from metering.models import RollupState, UsageBucket
from metering.selectors import events_newest_xid
from metering.services import feature_create, meter_create, usage_rollup
from metering.usage import usage_memories_clear
from tests.factories import ConsumerMappingFactory, CustomerFactory, PlanVersionFactory, unit_price
from tests.metering.conftest import cloud_event

NOV = datetime(2026, 11, 1, tzinfo=UTC)
AT = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)  # inside an hour: a partial hour at the end
FEATURES = ("calls", "calls_ok", "tokens", "input_tokens")
_accounts = itertools.count()


@pytest.fixture(autouse=True)
def _fresh_memories():
    entitlement_cache.forget_local()
    usage_memories_clear()
    yield


@pytest.fixture
def plan(transactional_db):
    """A COUNT and a SUM meter, each priced and entitled whole and through a filter."""
    requests = meter_create(
        key="requests",
        event_type="request",
        aggregation="COUNT",
        group_by={"status": "$.status", "route": "$.route"},
    )
    llm = meter_create(
        key="llm",
        event_type="llm",
        aggregation="SUM",
        value_property="$.tokens",
        group_by={"direction": "$.direction"},
    )
    features = [
        feature_create(key="calls", meter=requests),
        feature_create(key="calls_ok", meter=requests, filters={"status": ["200", "201"]}),
        feature_create(key="tokens", meter=llm),
        feature_create(key="input_tokens", meter=llm, filters={"direction": ["input"]}),
    ]
    return PlanVersionFactory(
        key="metered",
        name="Metered",
        rate_cards=tuple(unit_price(f, "0.001", key=f.key) for f in features),
        entitlements=tuple(
            {"feature": f.key, "type": "metered", "limit": 1000, "period": "monthly"}
            for f in features
        ),
    )


def _account(plan) -> tuple[str, list[str]]:
    """A new billing account on the plan from November, with a subsidiary billed to it;
    its key and the consumer keys of the two."""
    n = next(_accounts)
    parent = CustomerFactory(key=f"acct{n}")
    child = CustomerFactory(key=f"acct{n}-eu", parent=parent)
    subscription_create(customer=parent, plan_version=plan, start=NOV)
    keys = [f"acct{n}-gw", f"acct{n}-eu-gw"]
    ConsumerMappingFactory(consumer_key=keys[0], customer=parent, valid_from=NOV)
    ConsumerMappingFactory(consumer_key=keys[1], customer=child, valid_from=NOV)
    return parent.key, keys


def _event(i: str, subject: str, at: datetime, *, llm: bool, status: str, tokens: int) -> dict:
    stamp = at.isoformat().replace("+00:00", "Z")
    if llm:
        direction = "input" if tokens % 2 else "output"
        return cloud_event(
            i, type="llm", subject=subject, time=stamp, tokens=tokens, direction=direction
        )
    return cloud_event(i, subject=subject, time=stamp, status=status, route="/flights")


def _roll_up_everything() -> None:
    """Roll up every stored event. The rollup stops below the oldest transaction open on
    the server, which another process may hold for a moment: wait for it."""
    newest = events_newest_xid()
    deadline = time.monotonic() + 60
    while True:
        usage_rollup(now=AT)
        if not RollupState.objects.filter(watermark__lte=newest).exists():
            return
        if time.monotonic() > deadline:
            pytest.fail(
                "another transaction on the server held the rollup back for a minute: "
                "the comparison needs some usage rolled up"
            )
        time.sleep(0.5)


def _invoiced(account_key: str) -> dict[str, Decimal]:
    """What the upcoming invoice (usage up to ``AT``) bills per feature."""
    upcoming = upcoming_invoice(customer=Customer.objects.get(key=account_key), now=AT)
    billed: dict[str, Decimal] = {}
    for line in upcoming.rated.lines:
        if line.kind == LineKind.USAGE:
            key = upcoming.feature_keys[line.feature_id]
            billed[key] = billed.get(key, Decimal(0)) + line.quantity
    return billed


def _checked(api, account_key: str) -> dict[str, Decimal]:
    """The value API's usage per feature at ``AT``, and the service's without caches."""
    stamp = AT.isoformat().replace("+00:00", "Z")
    found = {}
    for key in FEATURES:
        url = f"/api/v1/customers/{account_key}/entitlements/{key}/value"
        response = api.get(url, {"time": stamp})
        assert response.status_code == 200, response.content
        usage = Decimal(str(response.json()["usage"]))
        uncached = entitlement_value_for_key(
            customer_key=account_key, feature_key=key, at=AT, cached=False
        )
        assert uncached.usage == usage, key
        found[key] = usage
    return found


def test_the_entitlement_check_counts_what_the_invoice_bills_rolled_up_or_not(api, ingest, plan):
    account, (gw, eu_gw) = _account(plan)
    rolled = [
        _event("r1", gw, NOV + timedelta(days=2, hours=3), llm=False, status="200", tokens=0),
        _event("r2", gw, NOV + timedelta(days=2, hours=4), llm=False, status="500", tokens=0),
        _event("r3", eu_gw, NOV + timedelta(days=5), llm=False, status="201", tokens=0),
        _event("r4", gw, NOV + timedelta(days=3), llm=True, status="", tokens=101),
        _event("r5", eu_gw, NOV + timedelta(days=4), llm=True, status="", tokens=40),
        _event("r6", gw, NOV + timedelta(days=1, minutes=7), llm=True, status="", tokens=7),
        # after AT: in the period, but not in the usage so far
        _event("r7", gw, AT + timedelta(hours=2), llm=True, status="", tokens=1000),
    ]
    ingest(*rolled)
    _roll_up_everything()
    assert UsageBucket.objects.exists()
    fresh = [
        # ingested after the rollup: in this very hour, in the partial hour, long past
        _event("f1", gw, AT - timedelta(minutes=5), llm=False, status="200", tokens=0),
        _event("f2", eu_gw, AT - timedelta(minutes=29), llm=True, status="", tokens=33),
        _event(
            "f3",
            gw,
            NOV + timedelta(days=2, hours=3, minutes=30),
            llm=False,
            status="404",
            tokens=0,
        ),
        _event("f4", eu_gw, NOV + timedelta(days=6), llm=True, status="", tokens=12),
        _event("f5", gw, NOV + timedelta(days=6, hours=1), llm=False, status="200", tokens=0),
        # before the subscription (another period): in neither
        _event("f6", gw, NOV - timedelta(hours=1), llm=False, status="200", tokens=0),
    ]
    ingest(*fresh)

    checked = _checked(api, account)
    billed = _invoiced(account)

    assert checked == billed
    # and the numbers are the ones the events say, rolled up or not
    assert checked == {
        "calls": Decimal(6),  # r1 r2 r3 f1 f3 f5
        "calls_ok": Decimal(4),  # 200/201: r1 r3 f1 f5
        "tokens": Decimal(101 + 40 + 7 + 33 + 12),
        "input_tokens": Decimal(101 + 7 + 33),  # odd token counts are input
    }


_events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=19 * 24 * 60 + 12 * 60 + 29),  # minutes into Nov
        st.booleans(),  # llm or request
        st.sampled_from(["200", "201", "404", "500"]),
        st.integers(min_value=1, max_value=5000),  # tokens
        st.booleans(),  # the subsidiary's consumer key
        st.booleans(),  # rolled up (else ingested after the rollup)
    ),
    max_size=30,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=_events)
def test_the_entitlement_check_and_the_invoice_agree_on_any_usage(api, ingest, plan, events):
    account, keys = _account(plan)
    made = [
        (
            _event(
                f"{account}-{i}",
                keys[sub],
                NOV + timedelta(minutes=minute),
                llm=llm,
                status=status,
                tokens=tokens,
            ),
            rolled,
        )
        for i, (minute, llm, status, tokens, sub, rolled) in enumerate(events)
    ]
    if early := [e for e, rolled in made if rolled]:
        ingest(*early)
    _roll_up_everything()
    if late := [e for e, rolled in made if not rolled]:
        ingest(*late)
    entitlement_cache.forget_local()

    checked = _checked(api, account)

    assert checked == _invoiced(account)
    assert checked["calls"] == sum(1 for m, llm, *_ in events if not llm)
    assert checked["tokens"] == sum(t for _, llm, _, t, *_ in events if llm)
