"""Roles (Viewer, Billing operator, Billing admin) enforced in the admin and the API, and
the audit history that records who changed customers, mappings, plans and invoices."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from audit.roles import ADMIN, OPERATOR, VIEWER, roles_sync
from billing.catalog.periods import Period
from billing.invoicing.services import invoice_draft_for, invoice_issue
from billing.models import Invoice, InvoiceLine, InvoiceStatus, Plan, PlanVersion, RateCard
from customers.models import ConsumerMapping, Customer
from rails.models import Settlement, SettlementState
from tests.factories import CustomerFactory, FeatureFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def staff(django_user_model):
    """A signed-in client for a staff member holding ``role`` (None: no role)."""
    roles_sync()

    def login(role: str | None) -> Client:
        name = (role or "no-role").lower().replace(" ", "-")
        user = django_user_model.objects.create_user(username=name, password="x", is_staff=True)
        if role:
            user.groups.add(Group.objects.get(name=role))
        client = Client()
        client.force_login(user)
        client.user = user
        return client

    return login


@pytest.fixture
def acme(db):
    account = CustomerFactory(key="acme", name="Acme Corp")
    SubscriptionFactory(customer=account, plan_version__feature=FeatureFactory(name=""), start=OCT)
    return account


@pytest.fixture
def draft(acme) -> Invoice:
    return invoice_draft_for(account=acme, period=Period(NOV, DEC), now=DEC)[0]


@pytest.fixture
def issued(acme) -> Invoice:
    """Issued, its settlement failed."""
    invoice = invoice_draft_for(account=acme, period=Period(OCT, NOV), now=NOV)[0]
    invoice = invoice_issue(invoice=invoice, now=NOV + timedelta(days=1))
    Settlement.objects.filter(invoice=invoice).update(
        state=SettlementState.FAILED, last_error="down"
    )
    return invoice


def invoice_url(name: str, *args) -> str:
    return reverse(f"admin:billing_invoice_{name}", args=args)


def retry_url(invoice: Invoice) -> str:
    return reverse(
        "admin:rails_settlement_retry", args=[Settlement.objects.get(invoice=invoice).pk]
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# ---------------------------------------------------------------------------- roles_sync


def test_roles_sync_makes_three_groups_and_running_it_again_changes_nothing():
    first, second = io.StringIO(), io.StringIO()
    call_command("roles_sync", stdout=first)
    call_command("roles_sync", stdout=second)
    assert [line.split(":")[0] for line in second.getvalue().splitlines()] == [
        VIEWER,
        OPERATOR,
        ADMIN,
    ]
    assert all(line.endswith("(unchanged)") for line in second.getvalue().splitlines())

    def perms(role):
        return {
            f"{p.content_type.app_label}.{p.codename}"
            for p in Group.objects.get(name=role).permissions.all()
        }

    viewer, operator, admin = perms(VIEWER), perms(OPERATOR), perms(ADMIN)
    assert {
        "billing.view_invoice",
        "rails.view_settlement",
        "customers.view_customer",
        "core.api_read",
    } <= viewer
    assert not {p for p in viewer if not p.split(".")[1].startswith("view_")} - {"core.api_read"}
    assert operator - viewer == {"billing.change_invoice", "rails.retry_settlement"}
    assert {
        "billing.issue_invoice",
        "billing.void_invoice",
        "billing.create_creditnote",
        "rails.retry_settlement",
        "rails.change_settlement",
        "billing.change_ratecard",
        "billing.add_plan",
        "customers.change_customer",
        "core.api_write",
    } <= admin
    assert "core.add_apikey" not in admin


def test_roles_sync_takes_back_a_permission_given_to_a_role_by_hand():
    roles_sync()
    viewer = Group.objects.get(name=VIEWER)
    viewer.permissions.add(Permission.objects.get(codename="issue_invoice"))
    out = io.StringIO()
    call_command("roles_sync", stdout=out)
    assert "Viewer: " in out.getvalue() and "  - billing.issue_invoice" in out.getvalue()
    assert not viewer.permissions.filter(codename="issue_invoice").exists()


# ---------------------------------------------------------------------------- the admin


def test_a_viewer_sees_invoices_and_settlements_but_cannot_issue_void_or_retry(
    staff, draft, issued
):
    viewer = staff(VIEWER)
    home = viewer.get(reverse("admin:index")).content.decode()
    assert 'id="attention-failed-settlements"' in home and 'id="dashboard-revenue"' in home
    assert viewer.get(invoice_url("changelist")).status_code == 200
    page = viewer.get(invoice_url("change", draft.pk)).content.decode()
    assert 'id="invoice-issue"' not in page and 'id="invoice-recompute"' not in page
    assert 'id="invoice-void"' not in viewer.get(invoice_url("change", issued.pk)).content.decode()
    assert viewer.get(reverse("admin:rails_settlement_changelist")).status_code == 200

    assert viewer.get(invoice_url("issue", draft.pk)).status_code == 403
    assert viewer.post(invoice_url("issue", draft.pk)).status_code == 403
    assert viewer.post(invoice_url("recompute", draft.pk)).status_code == 403
    assert viewer.post(invoice_url("void", issued.pk), {"reason": "no"}).status_code == 403
    assert viewer.post(invoice_url("credit_note", issued.pk), {"reason": "no"}).status_code == 403
    assert viewer.post(retry_url(issued)).status_code == 403
    # a list action the role does not have is refused, not run
    viewer.post(
        invoice_url("changelist"),
        {"action": "issue_selected", "post": "yes", ACTION_CHECKBOX_NAME: [str(draft.pk)]},
    )
    viewer.post(
        reverse("admin:rails_settlement_changelist"),
        {
            "action": "retry_now",
            ACTION_CHECKBOX_NAME: [str(Settlement.objects.get(invoice=issued).pk)],
        },
    )
    assert Invoice.objects.get(pk=draft.pk).status == InvoiceStatus.DRAFT
    assert Invoice.objects.get(pk=issued.pk).status == InvoiceStatus.ISSUED
    assert (
        not Settlement.objects.get(invoice=issued).events.filter(note="Retry requested.").exists()
    )
    customer = reverse("admin:customers_customer_change", args=[draft.customer_id])
    assert viewer.get(customer).status_code == 200
    assert viewer.post(customer, {"name": "Renamed"}).status_code == 403


def test_an_operator_recomputes_drafts_and_retries_settlements_but_cannot_issue_or_void(
    staff, draft, issued
):
    operator = staff(OPERATOR)
    page = operator.get(invoice_url("change", draft.pk)).content.decode()
    assert 'id="invoice-recompute"' in page and 'id="invoice-add-line"' in page
    assert 'id="invoice-issue"' not in page

    response = operator.post(invoice_url("recompute", draft.pk), follow=True)
    assert messages_of(response) == [f"Recomputed {draft}: total 49.00 USD."]
    operator.post(
        invoice_url("add_line", draft.pk),
        {"description": "Workshop", "amount": "100", "customer": draft.customer_id},
    )
    assert Invoice.objects.get(pk=draft.pk).lines.filter(description="Workshop").exists()
    operator.post(invoice_url("recompute", draft.pk))  # rewrites the computed lines in bulk
    rows = InvoiceLine.history.filter(invoice_id=draft.pk)
    assert [(r.description, r.history_type, r.history_user) for r in rows] == [
        ("Workshop", "+", operator.user)
    ]  # the operator's line, not the recomputes' noise

    response = operator.post(retry_url(issued), follow=True)
    assert messages_of(response)[-1] == "Retry queued as a new attempt."
    event = Settlement.objects.get(invoice=issued).events.get(note="Retry requested.")
    assert event.actor == "billing-operator"

    assert operator.get(invoice_url("issue", draft.pk)).status_code == 403
    assert operator.post(invoice_url("issue", draft.pk)).status_code == 403
    assert operator.post(invoice_url("void", issued.pk), {"reason": "no"}).status_code == 403
    assert operator.get(invoice_url("credit_note", issued.pk)).status_code == 403
    operator.post(
        invoice_url("changelist"),
        {"action": "issue_selected", "post": "yes", ACTION_CHECKBOX_NAME: [str(draft.pk)]},
    )
    assert Invoice.objects.get(pk=draft.pk).status == InvoiceStatus.DRAFT
    listing = operator.get(reverse("admin:rails_settlement_changelist")).content.decode()
    assert 'value="retry_now"' in listing and 'value="mark_paid"' not in listing


def test_a_billing_admin_issues_and_voids(staff, draft):
    admin = staff(ADMIN)
    assert 'id="invoice-issue"' in admin.get(invoice_url("change", draft.pk)).content.decode()
    response = admin.post(invoice_url("issue", draft.pk), follow=True)
    invoice = Invoice.objects.get(pk=draft.pk)
    assert invoice.status == InvoiceStatus.ISSUED and messages_of(response)[0].startswith("Issued ")
    assert admin.get(invoice_url("credit_note", invoice.pk)).status_code == 200
    admin.post(invoice_url("void", invoice.pk), {"reason": "Wrong plan"}, follow=True)
    assert Invoice.objects.get(pk=draft.pk).status == InvoiceStatus.VOID


# ------------------------------------------------------------------------------ the API


def test_the_api_lets_staff_sessions_read_and_write_as_their_role_allows(
    staff, acme, api_client_for
):
    new = {"key": "initech", "name": "Initech", "currency": "USD"}
    assert staff(None).get("/api/v1/customers").status_code == 403
    for role in (VIEWER, OPERATOR):
        client = staff(role)
        assert client.get("/api/v1/customers").status_code == 200
        response = client.post("/api/v1/customers", new, content_type="application/json")
        assert response.status_code == 403 and "not change" in response.json()["detail"]
    admin = staff(ADMIN)
    assert admin.post("/api/v1/customers", new, content_type="application/json").status_code == 201
    reader = api_client_for("read")  # API keys keep their scopes
    assert reader.get("/api/v1/customers").status_code == 200
    assert reader.post("/api/v1/customers", {**new, "key": "x2"}, format="json").status_code == 403


# ------------------------------------------------------------------------------ history


def customer_form(customer: Customer, **changes) -> dict:
    data = {
        "key": customer.key,
        "name": customer.name,
        "email": customer.email,
        "currency": customer.currency,
        "timezone": customer.timezone,
        "parent": "",
        "rail": customer.rail,
        "rail_settings": "{}",
        "address_line1": "",
        "address_line2": "",
        "city": "",
        "region": "",
        "postal_code": "",
        "country": "",
        "tax_id": "",
        "consumer_mappings-TOTAL_FORMS": "0",
        "consumer_mappings-INITIAL_FORMS": "0",
        "subsidiaries-TOTAL_FORMS": "0",
        "subsidiaries-INITIAL_FORMS": "0",
    }
    return {**data, **changes}


def test_history_records_who_changed_a_customer_a_mapping_a_plan_and_an_invoice(
    staff, draft, django_capture_on_commit_callbacks
):
    admin = staff(ADMIN)
    customer = draft.customer
    response = admin.post(
        reverse("admin:customers_customer_change", args=[customer.pk]),
        customer_form(customer, name="Acme Corporation"),
    )
    assert response.status_code == 302
    row = Customer.history.filter(id=customer.pk).latest()
    assert (row.history_type, row.history_user, row.name) == ("~", admin.user, "Acme Corporation")

    admin.post(
        reverse("admin:customers_consumermapping_add"),
        {
            "consumer_key": "acme-gw",
            "customer": customer.pk,
            "valid_from_0": "2026-10-01",
            "valid_from_1": "00:00:00",
        },
    )
    mapping = ConsumerMapping.objects.get(consumer_key="acme-gw")
    assert ConsumerMapping.history.get(id=mapping.pk).history_user == admin.user

    version = PlanVersion.objects.get()
    cards = list(version.rate_cards.order_by("position"))
    form = {
        "name": "Pro",
        "description": "",
        "currency": "USD",
        "cadence": "monthly",
        "minimum_commitment": "10",
        "cards-TOTAL_FORMS": str(len(cards)),
        "cards-INITIAL_FORMS": str(len(cards)),
        "cards-MIN_NUM_FORMS": "0",
        "cards-MAX_NUM_FORMS": "1000",
    }
    for i, card in enumerate(cards):
        price = {"model": "unit", "unit_price": "0.02"} if card.key == "calls" else card.price
        form |= {
            f"cards-{i}-key": card.key,
            f"cards-{i}-name": card.name,
            f"cards-{i}-feature": card.feature.key if card.feature else "",
            f"cards-{i}-price": json.dumps(price),
        }
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(reverse("admin:billing_plan_prices", args=[version.plan_id]), form)
    assert response.status_code == 302
    new_version = PlanVersion.objects.order_by("-version").first()  # subscribed: a new version
    assert PlanVersion.history.get(id=new_version.pk).history_user == admin.user
    price_rows = RateCard.history.filter(plan_version_id=new_version.pk)
    assert {r.key: (r.price, r.history_user) for r in price_rows}["calls"] == (
        {"model": "unit", "unit_price": "0.02"},
        admin.user,
    )

    admin.post(invoice_url("issue", draft.pk))
    row = Invoice.history.filter(id=draft.pk).latest()
    assert (row.status, row.history_user) == (InvoiceStatus.ISSUED, admin.user)
    assert row.history_change_reason.startswith("draft → issued by billing-admin")

    page = admin.get(reverse("admin:audit_history", args=["customers", "customer", customer.pk]))
    text = page.content.decode()
    assert page.status_code == 200 and "billing-admin" in text
    assert "Acme Corp</del> → " in text and "Acme Corporation" in text and "acme-gw" in text
    text = admin.get(
        reverse("admin:audit_history", args=["billing", "plan", version.plan_id])
    ).content.decode()
    assert "0.02" in text and "v2" in text
    text = admin.get(
        reverse("admin:audit_history", args=["billing", "invoice", draft.pk])
    ).content.decode()
    assert "draft → issued by billing-admin" in text
    assert (
        reverse("admin:audit_history", args=["billing", "invoice", draft.pk])
        in admin.get(invoice_url("change", draft.pk)).content.decode()
    )
    recent = admin.get(reverse("admin:audit_recent")).content.decode()
    number = Invoice.objects.get(pk=draft.pk).number  # INV-<year of issue>-000001
    assert "acme-gw" in recent and "billing-admin" in recent and number in recent


def test_a_change_through_the_api_names_the_key_not_a_user(api):
    assert (
        api.post(
            "/api/v1/customers", {"key": "initech", "name": "Initech"}, format="json"
        ).status_code
        == 201
    )
    row = Customer.history.get(key="initech")
    assert row.history_user is None and row.history_change_reason.startswith("API key ")


def test_history_pages_need_the_view_permission_of_the_model(staff, acme):
    url = reverse("admin:audit_history", args=["customers", "customer", acme.pk])
    viewer = staff(VIEWER)
    assert staff(None).get(url).status_code == 403
    assert viewer.get(url).status_code == 200
    assert (
        viewer.get(reverse("admin:audit_history", args=["rails", "settlement", 1])).status_code
        == 404
    )
    assert Plan.history.filter(key="pro").exists()
