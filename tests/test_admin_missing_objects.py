"""The admin's own pages that name an object in their URL answer 404 when there is no such
object (or the URL's id cannot be one), for a look (GET) and an action (POST) alike, and
never a server error: an operator's stale link or a typed URL is not a crash."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.django_db

MISSING = "424242"
PAST_EVERY_INTEGER_COLUMN = "99999999999999999999"
MISSING_UUID = str(uuid.UUID(int=0))

# Every custom admin view with an object's id or key in its URL (the model admins' own
# change pages are Django's, which redirect with a message).
ACTION_PAGES = [
    f"/admin/rails/settlement/{MISSING}/retry/",
    f"/admin/rails/settlement/{MISSING}/cancel/",
    f"/admin/rails/settlement/{MISSING}/mark-paid/",
    f"/admin/rails/settlement/invoice/{MISSING_UUID}/",
    f"/admin/rails/achfile/{MISSING}/download/",
    f"/admin/customers/customer/{MISSING}/overview/",
    f"/admin/audit/history/customers/customer/{MISSING}/",
    "/admin/audit/history/customers/customer/not-an-id/",
    f"/admin/audit/history/billing/invoice/{MISSING_UUID}/",
    "/admin/billing/entitlements/no-such-customer/",
    f"/admin/billing/invoice/{MISSING_UUID}/issue/",
    f"/admin/billing/invoice/{MISSING_UUID}/recompute/",
    f"/admin/billing/invoice/{MISSING_UUID}/add-line/",
    f"/admin/billing/invoice/{MISSING_UUID}/void/",
    f"/admin/billing/invoice/{MISSING_UUID}/credit-note/",
    f"/admin/billing/invoice/{MISSING_UUID}/pdf/",
    f"/admin/billing/invoice/{MISSING_UUID}/lines/{MISSING}/usage/",
    f"/admin/billing/invoice/{MISSING_UUID}/lines/{MISSING}/events.csv",
    f"/admin/billing/creditnote/{MISSING_UUID}/pdf/",
    f"/admin/billing/plan/{MISSING}/prices/",
    "/admin/billing/plan/not-an-id/prices/",
    f"/admin/billing/subscription/{MISSING}/change-plan/",
    "/admin/billing/subscription/upcoming/no-such-customer/",
    f"/admin/billing/creditgrant/{MISSING}/void/",
    f"/admin/billing/webhookdelivery/{MISSING}/redeliver/",
    f"/admin/metering/feature/{MISSING}/usage/",
    "/admin/metering/feature/not-an-id/usage/",
]


@pytest.mark.parametrize("page", ACTION_PAGES)
def test_a_page_about_an_object_that_does_not_exist_is_not_found(admin_client, page):
    assert admin_client.get(page).status_code == 404
    assert admin_client.post(page, {"reason": "r", "note": "n"}).status_code == 404


@pytest.mark.parametrize(
    "page",
    [
        f"/admin/rails/settlement/{PAST_EVERY_INTEGER_COLUMN}/retry/",
        f"/admin/rails/settlement/{PAST_EVERY_INTEGER_COLUMN}/cancel/",
        f"/admin/audit/history/customers/customer/{PAST_EVERY_INTEGER_COLUMN}/",
        f"/admin/billing/plan/{PAST_EVERY_INTEGER_COLUMN}/prices/",
        f"/admin/metering/feature/{PAST_EVERY_INTEGER_COLUMN}/usage/",
    ],
)
def test_an_id_no_column_can_hold_is_not_found(admin_client, page):
    assert admin_client.get(page).status_code == 404


def test_retrying_or_cancelling_a_missing_settlement_changes_nothing_and_is_not_found(
    admin_client,
):
    from rails.models import Settlement

    for action in ("retry", "cancel"):
        response = admin_client.post(f"/admin/rails/settlement/{MISSING}/{action}/")
        assert response.status_code == 404
    assert not Settlement.objects.exists()


def test_a_nul_in_an_admin_url_is_a_bad_request(admin_client):
    response = admin_client.get("/admin/billing/entitlements/a%00b/")
    assert response.status_code == 400
    assert admin_client.get("/admin/customers/customer/?q=a%00b").status_code == 400


def test_the_entitlement_page_refuses_a_time_the_database_cannot_hold(admin_client):
    from tests.factories import CustomerFactory

    CustomerFactory(key="acme")
    page = "/admin/billing/entitlements/acme/"
    assert admin_client.get(page, {"time": "2026-12-23T13:39:39-20:52"}).status_code == 400
    assert admin_client.get(page, {"time": "0001-01-01T00:00:00Z"}).status_code == 400
    assert admin_client.get(page, {"time": "not a time"}).status_code == 400
    assert admin_client.get(page, {"time": "2026-12-23T13:39:39-05:00"}).status_code == 200
