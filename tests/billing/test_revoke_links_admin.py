"""An operator revokes a customer's invoice links from the admin (customer page or invoice
page), after a confirmation page: links already sent answer "link not valid", new ones
work, and the revocation is in the customer's change history."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import include, path, reverse
from django.utils import timezone

import billing.admin  # noqa: F401  (registers the billing admins, revoking included)
from audit.roles import ADMIN, OPERATOR, VIEWER, roles_sync
from billing.documents.links import invoice_signed_path
from billing.invoicing.services import invoice_issue, invoice_line_add
from billing.models import Invoice
from config.urls import urlpatterns as project_urlpatterns
from tests.factories import CustomerFactory

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("billing.documents.portal_urls")),
    *project_urlpatterns,
]
pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.BILLING_INVOICE_ISSUED_HOOKS = []  # settlement is not what these tests are about


@pytest.fixture
def invoice() -> Invoice:
    acme = CustomerFactory(key="acme", name="Acme Rockets", email="ap@acme.example")
    draft = Invoice.objects.create(customer=acme, currency="USD")
    invoice_line_add(
        invoice=draft, description="Workshop", amount=Decimal("1500"), now=timezone.now()
    )
    return invoice_issue(invoice=draft, now=timezone.now())


@pytest.fixture
def staff(django_user_model):
    roles_sync()

    def login(role: str) -> Client:
        user = django_user_model.objects.create_user(
            username=role.lower().replace(" ", "-"), password="x", is_staff=True
        )
        user.groups.add(Group.objects.get(name=role))
        client = Client()
        client.force_login(user)
        return client

    return login


def link_works(client: Client, url: str) -> bool:
    response = client.get(url)
    assert response.status_code in (200, 404)
    if response.status_code == 404:
        assert "This link is not valid" in response.content.decode()
    return response.status_code == 200


def test_revoking_from_the_customer_page_confirms_then_old_links_are_invalid(staff, invoice):
    operator = staff(ADMIN)
    customer = invoice.customer
    sent = invoice_signed_path(invoice=invoice, now=timezone.now())
    visitor = Client()
    assert link_works(visitor, sent)

    page = operator.get(reverse("admin:customers_customer_change", args=[customer.pk]))
    revoke = reverse("admin:billing_customer_links_revoke", args=[customer.pk])
    assert revoke in page.content.decode()
    confirm = operator.get(revoke)
    assert confirm.status_code == 200 and 'id="revoke-links"' in confirm.content.decode()
    assert link_works(visitor, sent)  # asking is not revoking

    done = operator.post(revoke)

    assert done.status_code == 302
    assert done["Location"] == reverse("admin:customers_customer_change", args=[customer.pk])
    assert not link_works(visitor, sent)
    assert not link_works(visitor, sent.rstrip("/") + "/pdf")
    later = invoice_signed_path(invoice=invoice, now=timezone.now() + timedelta(seconds=1))
    assert link_works(visitor, later)

    history = operator.get(
        reverse("admin:audit_history", args=["customers", "customer", customer.pk])
    ).content.decode()
    assert "invoice links and portal sessions" in history
    assert "invoice links revoked by billing-admin" in history


def test_the_invoice_page_offers_revoking_its_customers_links_and_comes_back(staff, invoice):
    operator = staff(ADMIN)
    change = reverse("admin:billing_invoice_change", args=[invoice.pk])
    revoke = reverse("admin:billing_customer_links_revoke", args=[invoice.customer_id])
    assert revoke in operator.get(change).content.decode()
    sent = invoice_signed_path(invoice=invoice, now=timezone.now())

    done = operator.post(revoke, {"next": change})

    assert done["Location"] == change
    assert not link_works(Client(), sent)


@pytest.mark.parametrize("role", [VIEWER, OPERATOR])
def test_roles_without_the_permission_cannot_revoke(staff, invoice, role):
    client = staff(role)
    revoke = reverse("admin:billing_customer_links_revoke", args=[invoice.customer_id])
    sent = invoice_signed_path(invoice=invoice, now=timezone.now())

    page = client.get(reverse("admin:customers_customer_change", args=[invoice.customer_id]))
    assert revoke not in page.content.decode()
    assert client.get(revoke).status_code == 403
    assert client.post(revoke).status_code == 403
    assert link_works(Client(), sent)


def test_a_subsidiarys_page_points_at_the_account_whose_links_they_are(staff, invoice):
    subsidiary = CustomerFactory(key="acme-eu", name="Acme EU", parent=invoice.customer)
    page = staff(ADMIN).get(reverse("admin:billing_customer_links_revoke", args=[subsidiary.pk]))
    assert 'id="billed-on-account"' in page.content.decode()
    assert (
        reverse("admin:billing_customer_links_revoke", args=[invoice.customer_id])
        in page.content.decode()
    )
