"""Rating a period end to end: usage from real events, priced on the account's plan."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from billing.catalog.periods import Period
from billing.catalog.rating import LineKind, account_period, rate_period
from billing.catalog.services import (
    PlanVersionSpec,
    RateCardSpec,
    plan_save,
    subscription_change_plan,
    subscription_create,
)
from billing.models import BillingProfile, TaxRate
from customers.services import consumer_key_move
from metering.services import feature_create, meter_create, usage_rollup
from tests.factories import ConsumerMappingFactory, CustomerFactory
from tests.metering.conftest import cloud_event

pytestmark = pytest.mark.django_db(transaction=True)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def calls():
    meter = meter_create(
        key="api_requests",
        event_type="request",
        aggregation="COUNT",
        group_by={"status": "$.status"},
    )
    return feature_create(
        key="api_calls", name="API calls", meter=meter, filters={"status": ["200"]}
    )


def spec(*cards, commitment="0", currency="USD"):
    return PlanVersionSpec(
        currency=currency,
        cadence="monthly",
        minimum_commitment=Decimal(commitment),
        rate_cards=tuple(cards),
    )


def graduated_plan(calls, key="enterprise", commitment="0"):
    return plan_save(
        key=key,
        name=key.title(),
        spec=spec(
            RateCardSpec(
                key="platform", price={"model": "flat", "amount": "100.00", "timing": "in_arrears"}
            ),
            RateCardSpec(
                key="calls",
                feature=calls,
                price={
                    "model": "graduated",
                    "tiers": [
                        {"up_to": 10, "unit_price": "1.00"},
                        {"up_to": None, "unit_price": "0.10"},
                    ],
                },
            ),
            commitment=commitment,
        ),
    )[1]


def requests(ingest, subject, n, start, status="200", step=timedelta(hours=1)):
    ingest(
        *[
            cloud_event(
                f"{subject}-{start.isoformat()}-{i}",
                subject=subject,
                time=(start + i * step).isoformat(),
                status=status,
            )
            for i in range(n)
        ]
    )


def test_a_three_level_tree_is_priced_on_combined_usage_and_allocated_exactly(ingest, calls):
    globex = CustomerFactory(key="globex")
    eu = CustomerFactory(key="globex-eu", parent=globex)
    lab = CustomerFactory(key="globex-eu-lab", parent=eu)
    ConsumerMappingFactory(consumer_key="hq", customer=globex, valid_from=NOV)
    ConsumerMappingFactory(consumer_key="eu", customer=eu, valid_from=NOV)
    ConsumerMappingFactory(consumer_key="shared", customer=eu, valid_from=NOV)
    consumer_key_move(consumer_key="shared", to_customer=lab, at=NOV + timedelta(days=10))
    subscription_create(customer=globex, plan_version=graduated_plan(calls), start=NOV)

    requests(ingest, "hq", 5, NOV)
    requests(ingest, "eu", 7, NOV)
    requests(
        ingest, "shared", 6, NOV + timedelta(days=9, hours=21)
    )  # 3 before the move (eu), 3 after (lab)
    requests(ingest, "hq", 4, NOV, status="500")  # filtered out by the feature
    requests(ingest, "hq", 2, DEC)  # next period
    usage_rollup(now=DEC)

    rated = rate_period(account=globex, period=Period(NOV, DEC))
    usage = [line for line in rated.lines if line.kind == LineKind.USAGE]
    by_customer = {line.customer_id: line for line in usage}
    # combined: 5 + 7 + 6 = 18 calls → 10 × 1.00 + 8 × 0.10 = 10.80
    assert {line.group_quantity for line in usage} == {Decimal(18)}
    assert {line.group_amount for line in usage} == {Decimal("10.80")}
    assert {cid: line.quantity for cid, line in by_customer.items()} == {
        globex.pk: 5,
        eu.pk: 10,
        lab.pk: 3,
    }
    assert sum(line.amount for line in usage) == Decimal("10.80")
    assert by_customer[globex.pk].amount == Decimal("3.00")
    assert by_customer[eu.pk].amount == Decimal("6.00")
    assert by_customer[lab.pk].amount == Decimal("1.80")
    assert rated.subtotal == Decimal("110.80")


def test_a_subsidiary_billed_on_its_own_is_not_in_the_parents_invoice(ingest, calls):
    globex = CustomerFactory(key="globex")
    us = CustomerFactory(key="globex-us", parent=globex, bill_to_parent=False)
    ConsumerMappingFactory(consumer_key="us", customer=us, valid_from=NOV)
    subscription_create(customer=globex, plan_version=graduated_plan(calls), start=NOV)
    requests(ingest, "us", 3, NOV)
    usage_rollup(now=DEC)
    rated = rate_period(account=globex, period=Period(NOV, DEC))
    assert [line.quantity for line in rated.lines if line.kind == LineKind.USAGE] == [Decimal(0)]


def test_a_mid_period_plan_change_prices_each_side_by_its_own_plan(ingest, calls):
    acme = CustomerFactory(key="acme")
    ConsumerMappingFactory(consumer_key="acme-gw", customer=acme, valid_from=NOV)
    starter = plan_save(
        key="starter",
        name="Starter",
        spec=spec(
            RateCardSpec(
                key="base", price={"model": "flat", "amount": "30.00", "timing": "in_arrears"}
            ),
            RateCardSpec(key="calls", feature=calls, price={"model": "unit", "unit_price": "0.50"}),
        ),
    )[1]
    pro = plan_save(
        key="pro",
        name="Pro",
        spec=spec(
            RateCardSpec(
                key="base", price={"model": "flat", "amount": "90.00", "timing": "in_arrears"}
            ),
            RateCardSpec(
                key="calls",
                feature=calls,
                price={"model": "unit", "unit_price": "0.10", "included": 2},
            ),
        ),
    )[1]
    sub = subscription_create(customer=acme, plan_version=starter, start=NOV)
    change = NOV + timedelta(days=10)  # 10 of 30 days on starter
    subscription_change_plan(subscription=sub, plan_version=pro, at=change)
    requests(ingest, "acme-gw", 4, change - timedelta(hours=4))  # 4 before the change
    requests(ingest, "acme-gw", 6, change)  # 6 after
    usage_rollup(now=DEC)

    rated = rate_period(account=acme, period=Period(NOV, DEC))
    amounts = [(line.kind, round(line.quantity, 6), line.amount) for line in rated.lines]
    assert amounts == [
        (LineKind.FLAT_FEE, Decimal("0.333333"), Decimal("10.00")),
        (LineKind.USAGE, Decimal(4), Decimal("2.00")),
        (LineKind.FLAT_FEE, Decimal("0.666667"), Decimal("60.00")),
        (LineKind.USAGE, Decimal(6), Decimal("0.40")),  # 2 included
    ]
    assert rated.subtotal == Decimal("72.40")


def test_period_edges_follow_the_customers_time_zone(ingest, calls):
    tokyo = ZoneInfo("Asia/Tokyo")
    acme = CustomerFactory(key="acme", timezone="Asia/Tokyo")
    ConsumerMappingFactory(
        consumer_key="acme-gw", customer=acme, valid_from=NOV - timedelta(days=2)
    )
    start = datetime(2026, 11, 1, tzinfo=tokyo)  # 2026-10-31T15:00Z
    subscription_create(customer=acme, plan_version=graduated_plan(calls), start=start)
    period = account_period(account=acme, at=datetime(2026, 11, 15, tzinfo=UTC))
    assert (period.start, period.end) == (
        datetime(2026, 10, 31, 15, tzinfo=UTC),
        datetime(2026, 11, 30, 15, tzinfo=UTC),
    )
    just_before = period.start - timedelta(microseconds=1)
    ingest(
        cloud_event("before", subject="acme-gw", time=just_before.isoformat(), status="200"),
        cloud_event("first", subject="acme-gw", time=period.start.isoformat(), status="200"),
        cloud_event(
            "last",
            subject="acme-gw",
            time=(period.end - timedelta(microseconds=1)).isoformat(),
            status="200",
        ),
        cloud_event("after", subject="acme-gw", time=period.end.isoformat(), status="200"),
    )
    usage_rollup(now=DEC)
    rated = rate_period(account=acme, period=period)
    assert [line.quantity for line in rated.lines if line.kind == LineKind.USAGE] == [Decimal(2)]


def test_minimum_commitment_and_tax_round_once_on_the_sum(ingest, calls):
    acme = CustomerFactory(key="acme")
    vat = TaxRate.objects.create(key="vat19", name="VAT 19%", percentage=Decimal("19"))
    profile = BillingProfile.objects.create(customer=acme)
    profile.tax_rates.add(vat)
    subscription_create(
        customer=acme, plan_version=graduated_plan(calls, commitment="250.00"), start=NOV
    )
    rated = rate_period(account=acme, period=Period(NOV, DEC))
    kinds = [(line.kind, line.amount) for line in rated.lines]
    assert kinds == [
        (LineKind.FLAT_FEE, Decimal("100.00")),
        (LineKind.USAGE, Decimal("0.00")),
        (LineKind.MINIMUM_TRUE_UP, Decimal("150.00")),
    ]
    assert [(t.name, t.amount) for t in rated.taxes] == [("VAT 19%", Decimal("47.50"))]
    assert rated.total == Decimal("297.50")

    profile.tax_exempt, profile.tax_exempt_reason = True, "Reseller certificate 42"
    profile.save()
    rated = rate_period(account=acme, period=Period(NOV, DEC))
    assert (
        rated.taxes == ()
        and rated.tax_exempt_reason == "Reseller certificate 42"
        and rated.total == Decimal("250.00")
    )


def test_a_billing_runs_shared_context_rates_every_account_as_rating_it_alone_does(
    ingest, calls, django_assert_max_num_queries
):
    # A billing run reads usage for a chunk of accounts at once (one statement per
    # feature and range); each account must come out exactly as when rated on its own:
    # trees, a plan change inside the period, a unique count with and without
    # subsidiaries (whose distinct count over the group is read per account).
    from billing.catalog.rating_context import RatingContext

    users = feature_create(
        key="active_users",
        name="Active users",
        meter=meter_create(
            key="users", event_type="request", aggregation="UNIQUE_COUNT", value_property="$.user"
        ),
    )
    plan = plan_save(
        key="mixed",
        name="Mixed",
        spec=spec(
            RateCardSpec(key="calls", feature=calls, price={"model": "unit", "unit_price": "0.10"}),
            RateCardSpec(key="users", feature=users, price={"model": "unit", "unit_price": "2.00"}),
        ),
    )[1]
    accounts = []
    for i in range(4):
        account = CustomerFactory(key=f"acct-{i}")
        ConsumerMappingFactory(consumer_key=f"gw-{i}", customer=account, valid_from=NOV)
        if i % 2:  # a subsidiary billed on the account, with its own gateway key
            sub = CustomerFactory(key=f"acct-{i}-eu", parent=account)
            ConsumerMappingFactory(consumer_key=f"gw-{i}-eu", customer=sub, valid_from=NOV)
        sub = subscription_create(customer=account, plan_version=plan, start=NOV)
        if i == 2:
            subscription_change_plan(
                subscription=sub, plan_version=graduated_plan(calls), at=NOV + timedelta(days=9)
            )
        accounts.append(account)
    events = []
    for i in range(4):
        for key in (f"gw-{i}", f"gw-{i}-eu"):
            for n in range(3 + i):
                events.append(
                    cloud_event(
                        f"{key}-{n}",
                        subject=key,
                        time=(NOV + timedelta(days=n * 3, minutes=n)).isoformat(),
                        status="200",
                        user=f"user-{n % 2}",  # the same two users in the account and its subsidiary
                    )
                )
    ingest(*events)
    usage_rollup(now=DEC)
    ingest(cloud_event("late-0", subject="gw-1", time=(NOV + timedelta(days=2)).isoformat(),
                       status="200", user="user-9"))  # not rolled up: counted all the same  # fmt: skip

    alone = [rate_period(account=a, period=Period(NOV, DEC)) for a in accounts]
    context = RatingContext.load([a.pk for a in accounts])
    context.usage_prefetch((a, Period(NOV, DEC)) for a in accounts)
    # only the unique counts of the two trees are read alone (two statements each)
    with django_assert_max_num_queries(4):
        shared = [
            rate_period(account=a, period=Period(NOV, DEC), context=context) for a in accounts
        ]

    assert shared == alone
    users_of = {
        r.account_id: {line.group_quantity for line in r.lines if line.feature_id == users.pk}
        for r in shared
    }
    assert users_of[accounts[0].pk] == {Decimal(2)}
    assert users_of[accounts[1].pk] == {Decimal(3)}  # user-0, user-1 in both, and the late user-9


def first_flat_plan(calls, model="graduated"):
    return plan_save(
        key=f"{model}-flat",
        name="Tiered",
        spec=spec(
            RateCardSpec(
                key="calls",
                feature=calls,
                price={
                    "model": model,
                    "tiers": [
                        {"up_to": 10, "unit_price": "1.00", "flat_price": "20.00"},
                        {"up_to": None, "unit_price": "0.10", "flat_price": "5.00"},
                    ],
                },
            )
        ),
    )[1]


@pytest.mark.parametrize("model", ["graduated", "volume"])
def test_a_group_without_usage_pays_the_first_tiers_flat_fee_once(ingest, calls, model):
    globex = CustomerFactory(key="globex")
    for key in ("globex-eu", "globex-us"):
        sub = CustomerFactory(key=key, parent=globex)
        ConsumerMappingFactory(consumer_key=key, customer=sub, valid_from=NOV)
    subscription_create(customer=globex, plan_version=first_flat_plan(calls, model), start=NOV)

    rated = rate_period(account=globex, period=Period(NOV, DEC))

    (line,) = rated.lines  # once for the group, on the billing account
    assert (line.customer_id, line.quantity, line.amount) == (globex.pk, 0, Decimal("20.00"))
    assert rated.subtotal == Decimal("20.00")


def test_a_groups_tiers_and_first_flat_fee_are_shared_among_its_subsidiaries(ingest, calls):
    globex = CustomerFactory(key="globex")
    eu = CustomerFactory(key="globex-eu", parent=globex)
    us = CustomerFactory(key="globex-us", parent=globex)
    ConsumerMappingFactory(consumer_key="eu", customer=eu, valid_from=NOV)
    ConsumerMappingFactory(consumer_key="us", customer=us, valid_from=NOV)
    subscription_create(customer=globex, plan_version=first_flat_plan(calls), start=NOV)
    requests(ingest, "eu", 3, NOV)
    requests(ingest, "us", 1, NOV)
    usage_rollup(now=DEC)

    rated = rate_period(account=globex, period=Period(NOV, DEC))

    # 4 calls in the first tier: 20.00 flat + 4 × 1.00, once, split 3 : 1
    assert {line.group_amount for line in rated.lines} == {Decimal("24.00")}
    assert {line.customer_id: line.amount for line in rated.lines} == {
        eu.pk: Decimal("18.00"),
        us.pk: Decimal("6.00"),
    }
