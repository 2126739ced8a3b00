"""Customers see an overdue invoice as overdue: on the hosted page and in the portal,
with the portal's clock moved explicitly."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import include, path

from billing.documents.links import invoice_signed_path
from tests.billing.test_customer_access import sign_in
from tests.clock import clock_move
from tests.factories import CustomerFactory, IssuedInvoiceFactory

urlpatterns = [path("", include("billing.documents.portal_urls"))]
pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]

DAY = timedelta(days=1)


@pytest.fixture
def late(monkeypatch):
    invoice = IssuedInvoiceFactory(customer=CustomerFactory(key="acme", email="ap@acme.example"))
    now = invoice.due_at + 12 * DAY
    clock_move(monkeypatch, ("billing.documents.portal",), now)
    return invoice, now


def test_the_hosted_page_says_how_late_an_overdue_invoice_is(client, late):
    invoice, now = late

    html = client.get(invoice_signed_path(invoice=invoice, now=now)).content.decode()

    assert '<span class="badge overdue">Overdue</span>' in html
    assert "This invoice is 12 days past due" in html


def test_the_hosted_page_of_an_invoice_not_yet_due_says_open(client, late, monkeypatch):
    invoice, _ = late
    clock_move(monkeypatch, ("billing.documents.portal",), invoice.due_at)

    html = client.get(invoice_signed_path(invoice=invoice, now=invoice.due_at)).content.decode()

    assert "Overdue" not in html and ">Open<" in html


def test_the_portal_lists_an_overdue_invoice_as_overdue(client, late):
    sign_in(client, "ap@acme.example")

    html = client.get("/portal/").content.decode()

    assert '<span class="badge overdue">Overdue 12 days</span>' in html
