"""Moving many subscriptions to another plan version at once: the service."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from audit.roles import VIEWER, roles_sync
from billing.catalog.periods import Period
from billing.catalog.plan_migration import FAILED, MOVED, WOULD_MOVE, subscriptions_migrate
from billing.catalog.rating import rate_period
from billing.catalog.services import (
    PlanVersionSpec,
    plan_save,
    subscription_cancel,
    subscription_change_plan,
)
from billing.models import Subscription
from tests.factories import (
    CustomerFactory,
    IssuedInvoiceFactory,
    PlanVersionFactory,
    SubscriptionFactory,
    flat_fee,
)

pytestmark = pytest.mark.django_db

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
NOV_16 = datetime(2026, 11, 16, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 10, tzinfo=UTC)


def pro_v2(amount="59.00", currency="USD"):
    return plan_save(
        key="pro",
        name="Pro",
        spec=PlanVersionSpec(
            currency=currency,
            cadence="monthly",
            minimum_commitment=Decimal(0),
            rate_cards=(flat_fee(amount),),
        ),
    )[1]


@pytest.fixture
def v1():
    return PlanVersionFactory()


@pytest.fixture
def subscribers(v1):
    return [SubscriptionFactory(plan_version=v1, start=OCT) for _ in range(3)]


def test_every_subscriber_of_a_version_moves_at_its_next_period(v1, subscribers):
    v2 = pro_v2()

    report = subscriptions_migrate(from_version=v1, to_version=v2, at_next_period=True, now=NOW)

    assert [row.status for row in report.rows] == [MOVED] * 3
    assert {row.effective for row in report.rows} == {DEC}
    for sub in subscribers:
        assert Subscription.objects.get(customer=sub.customer, start=DEC).plan_version == v2
        assert Subscription.objects.get(pk=sub.pk).end == DEC
    # The period the change falls in is December's: $49 now, $59 after.
    assert (report.rows[0].current_total, report.rows[0].new_total) == (
        Decimal("49.00"),
        Decimal("59.00"),
    )
    assert report.summary == "3 moved to pro v2, 0 could not."


def test_a_subscription_that_cannot_move_is_reported_and_the_others_move(v1, subscribers):
    v2 = pro_v2()
    ended, on_v2, fine = subscribers
    subscription_cancel(
        subscription=ended, at=datetime(2026, 11, 5, tzinfo=UTC), timing="immediately"
    )
    subscription_change_plan(subscription=on_v2, plan_version=v2, at=NOV, timing="immediately")
    on_v2_now = Subscription.objects.get(customer=on_v2.customer, plan_version=v2)

    report = subscriptions_migrate(
        subscriptions=Subscription.objects.filter(
            pk__in=[ended.pk, on_v2_now.pk, fine.pk]
        ).order_by("customer__key"),
        to_version=v2,
        at_next_period=True,
        now=NOW,
    )

    by_customer = {row.customer_key: row for row in report.rows}
    assert by_customer[ended.customer.key].status == FAILED
    assert "Ended" in by_customer[ended.customer.key].reason
    assert by_customer[on_v2.customer.key].status == FAILED
    assert "Already on pro v2" in by_customer[on_v2.customer.key].reason
    assert by_customer[fine.customer.key].status == MOVED


def test_a_version_in_another_currency_is_refused_per_subscription(v1, subscribers):
    euro = plan_save(
        key="pro-eu",
        name="Pro EU",
        spec=PlanVersionSpec(
            currency="EUR", cadence="monthly", minimum_commitment=Decimal(0), rate_cards=()
        ),
    )[1]

    report = subscriptions_migrate(from_version=v1, to_version=euro, at=NOV_16, now=NOW)

    assert [row.status for row in report.rows] == [FAILED] * 3
    assert "priced in EUR" in report.rows[0].reason
    assert Subscription.objects.filter(plan_version=euro).count() == 0


def test_a_change_inside_an_invoiced_period_is_refused(v1, subscribers):
    v2 = pro_v2()
    sub = subscribers[0]
    IssuedInvoiceFactory(customer=sub.customer, period_start=OCT, period_end=NOV, now=NOV)

    report = subscriptions_migrate(
        subscriptions=[sub], to_version=v2, at=datetime(2026, 10, 20, tzinfo=UTC), now=NOW
    )

    assert report.rows[0].status == FAILED
    assert "already invoiced" in report.rows[0].reason
    assert Subscription.objects.get(pk=sub.pk).end is None


def test_at_an_instant_the_period_is_prorated_as_a_single_plan_change_would_be(v1):
    migrated, changed = SubscriptionFactory(plan_version=v1), SubscriptionFactory(plan_version=v1)
    v2 = pro_v2()  # a new version: v1 has subscribers

    report = subscriptions_migrate(subscriptions=[migrated], to_version=v2, at=NOV_16, now=NOW)
    subscription_change_plan(subscription=changed, plan_version=v2, at=NOV_16, timing="immediately")

    november = Period(NOV, DEC)
    by_migration = rate_period(account=migrated.customer, period=november)
    by_change = rate_period(account=changed.customer, period=november)
    assert [line.amount for line in by_migration.lines] == [line.amount for line in by_change.lines]
    # 15 days of 30 at $49, then 15 at $59: $24.50 + $29.50.
    assert [line.amount for line in by_migration.lines] == [Decimal("24.50"), Decimal("29.50")]
    assert report.rows[0].new_total == Decimal("54.00") == by_migration.total
    assert report.rows[0].current_total == Decimal("49.00")


def test_a_dry_run_writes_nothing_and_predicts_the_real_total(v1, subscribers):
    v2 = pro_v2()
    before = list(Subscription.objects.order_by("pk").values())

    preview = subscriptions_migrate(
        from_version=v1, to_version=v2, at=NOV_16, dry_run=True, now=NOW
    )

    assert list(Subscription.objects.order_by("pk").values()) == before
    assert [row.status for row in preview.rows] == [WOULD_MOVE] * 3
    assert preview.summary == "3 would move to pro v2, 0 could not."
    real = subscriptions_migrate(from_version=v1, to_version=v2, at=NOV_16, now=NOW)
    assert [row.new_total for row in real.rows] == [row.new_total for row in preview.rows]
    assert [row.status for row in real.rows] == [MOVED] * 3


def test_customers_asked_for_without_a_subscription_are_reported(v1):
    SubscriptionFactory(plan_version=v1)
    v2 = pro_v2()
    CustomerFactory(key="nobody")

    report = subscriptions_migrate(
        subscriptions=[], missing=["nobody"], from_version=v1, to_version=v2, at=NOV_16, now=NOW
    )

    assert report.rows[0].customer_key == "nobody"
    assert report.rows[0].status == FAILED


# ------------------------------------------------------------------------ API

URL = "/api/v1/plans/pro/versions/1/migrations"


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    return response.json()


def test_the_api_previews_then_moves_every_subscriber_at_the_next_period(api, v1, subscribers):
    pro_v2()

    preview = api.post(
        URL, {"to_version": 2, "effective": "next_period", "dry_run": True}, format="json"
    )

    assert preview.status_code == 200, preview.content
    body = preview.json()
    assert (body["dry_run"], body["moved"], body["failed"], body["currency"]) == (True, 3, 0, "USD")
    row = body["results"][0]
    assert row["status"] == "would_move"
    assert (row["from_version"], row["to_version"]) == ("pro v1", "pro v2")
    assert (row["current_total"], row["new_total"]) == ("49.00", "59.00")
    assert Subscription.objects.filter(plan_version__version=2).count() == 0

    moved = api.post(URL, {"to_version": 2, "effective": "next_period"}, format="json").json()
    assert moved["moved"] == 3
    assert {r["status"] for r in moved["results"]} == {"moved"}
    assert Subscription.objects.filter(plan_version__version=2).count() == 3


def test_the_api_moves_the_customers_named_at_an_instant(api, v1, subscribers):
    pro_v2()
    named = subscribers[0].customer.key

    body = api.post(
        URL,
        {"to_version": 2, "effective": "2026-11-16T00:00:00Z", "subscriptions": [named]},
        format="json",
    ).json()

    assert [(r["customer"], r["status"]) for r in body["results"]] == [(named, "moved")]
    assert body["results"][0]["effective"] == "2026-11-16T00:00:00Z"
    assert body["results"][0]["period"] == {
        "start": "2026-11-01T00:00:00Z",
        "end": "2026-12-01T00:00:00Z",
    }
    assert Subscription.objects.filter(plan_version__version=2).count() == 1


def test_a_named_customer_on_another_version_is_reported_not_refused(api, v1, subscribers):
    pro_v2()
    CustomerFactory(key="elsewhere")

    body = api.post(
        URL,
        {"to_version": 2, "effective": "next_period", "subscriptions": ["elsewhere"]},
        format="json",
    ).json()

    assert body["results"][0]["customer"] == "elsewhere"
    assert body["results"][0]["status"] == "failed"


@pytest.mark.parametrize(
    ("url", "payload", "status", "field"),
    [
        ("/api/v1/plans/nope/versions/1/migrations", {}, 404, None),
        ("/api/v1/plans/pro/versions/9/migrations", {}, 404, None),
        (URL, {"to_version": 9, "effective": "next_period"}, 400, "to_version"),
        (URL, {"to_version": 1, "effective": "next_period"}, 400, "to_version"),
        (URL, {"to_version": 2, "effective": "tomorrow"}, 400, "effective"),
        (URL, {"to_version": 2}, 400, "effective"),
        (URL, {"to_version": "two", "effective": "next_period"}, 400, "to_version"),
        (
            URL,
            {"to_version": 2, "effective": "next_period", "subscriptions": ["ghost"]},
            400,
            "subscriptions",
        ),
        (
            URL,
            {"to_version": 2, "effective": "next_period", "subscriptions": []},
            400,
            "subscriptions",
        ),
        (
            URL,
            {"to_version": 1, "to_plan": "pro-eu", "effective": "next_period"},
            400,
            "to_version",
        ),
        (URL, {"to_version": 1, "to_plan": "ghost", "effective": "next_period"}, 400, "to_plan"),
    ],
)
def test_bad_migration_requests_get_a_problem_document(
    api, v1, subscribers, url, payload, status, field
):
    pro_v2()
    plan_save(
        key="pro-eu",
        name="Pro EU",
        spec=PlanVersionSpec(
            currency="EUR", cadence="monthly", minimum_commitment=Decimal(0), rate_cards=()
        ),
    )

    body = problem(api.post(url, payload, format="json"), status)

    if field:
        assert field in body["errors"], body
    assert Subscription.objects.filter(plan_version__version=2).count() == 0


def test_migrating_needs_the_write_scope(api_client_for, v1, subscribers):
    pro_v2()

    response = api_client_for("read").post(
        URL, {"to_version": 2, "effective": "next_period"}, format="json"
    )

    problem(response, 403)


# ------------------------------------------------------------------------ admin


def _start_migration(admin_client, subs):
    response = admin_client.post(
        reverse("admin:billing_subscription_changelist"),
        {"action": "migrate", "_selected_action": [s.pk for s in subs]},
    )
    assert response.status_code == 302
    return response.url


def test_the_migrate_action_opens_a_page_listing_the_selection(admin_client, v1, subscribers):
    url = _start_migration(admin_client, subscribers)

    page = admin_client.get(url).content.decode()

    assert "Migrate subscriptions to another plan version" in page
    for sub in subscribers:
        assert sub.customer.key in page


def test_the_admin_preview_shows_each_invoice_now_and_after_and_writes_nothing(
    admin_client, v1, subscribers
):
    v2 = pro_v2()
    url = _start_migration(admin_client, subscribers[:1])

    page = admin_client.post(
        url,
        {
            "to_version": v2.pk,
            "timing": "immediately",
            "at": "2026-11-16 00:00:00",
            "preview": "Preview",
        },
    ).content.decode()

    assert 'id="migration-preview"' in page
    assert "49.00 USD" in page and "54.00 USD" in page and "5.00 USD" in page
    assert "would move" in page
    assert Subscription.objects.filter(plan_version=v2).count() == 0


def test_the_admin_migrates_and_reports_what_could_not_move(admin_client, v1, subscribers):
    v2 = pro_v2()
    ended = subscribers[0]
    subscription_cancel(
        subscription=ended, at=datetime(2026, 10, 5, tzinfo=UTC), timing="immediately"
    )
    url = _start_migration(admin_client, subscribers)

    page = admin_client.post(
        url, {"to_version": v2.pk, "timing": "next_period", "migrate": "Migrate"}, follow=True
    ).content.decode()

    assert "2 moved to pro v2, 1 could not." in page
    assert f"{ended.customer.key}: not moved: ended" in page.lower()
    assert Subscription.objects.filter(plan_version=v2).count() == 2


def test_an_instant_is_required_to_migrate_at_an_instant(admin_client, v1, subscribers):
    v2 = pro_v2()
    url = _start_migration(admin_client, subscribers)

    page = admin_client.post(
        url, {"to_version": v2.pk, "timing": "immediately", "migrate": "Migrate"}
    ).content.decode()

    assert "Give the instant the subscriptions move at." in page
    assert Subscription.objects.filter(plan_version=v2).count() == 0


def test_a_viewer_cannot_migrate(django_user_model, client, v1, subscribers):
    roles_sync()
    v2 = pro_v2()
    viewer = django_user_model.objects.create_user(username="viewer", is_staff=True)
    viewer.groups.add(Group.objects.get(name=VIEWER))
    client.force_login(viewer)
    url = reverse("admin:billing_subscription_migrate") + f"?ids={subscribers[0].pk}"

    response = client.post(
        url, {"to_version": v2.pk, "timing": "next_period", "migrate": "Migrate"}
    )

    assert response.status_code == 403
    assert Subscription.objects.filter(plan_version=v2).count() == 0
