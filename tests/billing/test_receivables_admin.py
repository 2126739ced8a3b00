"""The admin's overdue column and filter, the accounts-receivable aging page and its
CSV, and the dashboard's overdue figure, with the admin's clock moved explicitly."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from audit.roles import VIEWER, roles_sync
from billing.invoicing.admin.aging import invoices_url
from tests.clock import clock_move
from tests.factories import CustomerFactory, IssuedInvoiceFactory

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
AGING = "/admin/billing/receivables/aging/"
CSV = "/admin/billing/receivables/aging.csv"


@pytest.fixture
def clock(monkeypatch):
    modules = (
        "billing.invoicing.admin.invoices",
        "billing.invoicing.admin.aging",
        "backoffice.templatetags.dashboard",
    )

    def move(now):
        clock_move(monkeypatch, modules, now)

    return move


@pytest.fixture
def world(clock):
    acme = CustomerFactory(key="acme", name='=HYPERLINK("http://evil")')
    late = IssuedInvoiceFactory(customer=acme, lines=(("Late", "1234.50"),))
    fresh = IssuedInvoiceFactory(
        customer=CustomerFactory(key="bolt"),
        lines=(("Fresh", "10.00"),),
        now=late.issued_at + 60 * DAY,
    )
    yen = IssuedInvoiceFactory(
        customer=CustomerFactory(key="kyoto", currency="JPY"), lines=(("Yen", "5000"),)
    )
    clock(late.due_at + 45 * DAY)
    return {"acme": acme, "late": late, "fresh": fresh, "yen": yen}


def test_the_invoice_list_marks_and_filters_overdue_invoices(admin_client, world):
    listing = unescape(
        admin_client.get(reverse("admin:billing_invoice_changelist")).content.decode()
    )
    overdue = admin_client.get(reverse("admin:billing_invoice_changelist") + "?overdue=yes")

    assert listing.count("overdue 45\xa0days") == 2  # acme's and kyoto's; bolt's is not due
    numbers = {i.number for i in overdue.context["cl"].result_list}
    assert numbers == {world["late"].number, world["yen"].number}


def test_the_aging_page_shows_a_table_per_currency_with_totals_and_links(admin_client, world):
    page = admin_client.get(AGING)

    assert page.status_code == 200
    html = unescape(page.content.decode())
    assert 'data-currency="JPY"' in html and 'data-currency="USD"' in html
    assert "1,234.50 USD" in html and "5,000 JPY" in html and "10.00 USD" in html
    link = invoices_url(customer_id=world["acme"].pk, currency="USD")
    assert link in html
    linked = admin_client.get(link).context["cl"].result_list
    assert [i.number for i in linked] == [world["late"].number]


def test_the_aging_csv_holds_the_figures_with_formulas_neutralised(admin_client, world):
    response = admin_client.get(CSV)

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    acme = next(r for r in rows if r["customer"] == "acme")
    assert acme["name"].startswith("'=")
    assert (acme["currency"], acme["days_31_60"], acme["total"], acme["overdue"]) == (
        "USD", "1234.50", "1234.50", "1234.50",
    )  # fmt: skip
    bolt = next(r for r in rows if r["customer"] == "bolt")
    assert (bolt["current"], bolt["overdue"]) == ("10.00", "0.00")
    totals = {r["currency"]: r for r in rows if r["customer"] == "TOTAL"}
    assert totals["USD"]["total"] == "1244.50" and totals["JPY"]["days_31_60"] == "5000"
    only_yen = list(
        csv.DictReader(io.StringIO(admin_client.get(CSV + "?currency=jpy").content.decode()))
    )
    assert {r["currency"] for r in only_yen} == {"JPY"}


def test_the_aging_page_is_for_roles_that_view_invoices(django_user_model, world):
    roles_sync()
    viewer = django_user_model.objects.create_user(username="v", password="x", is_staff=True)
    viewer.groups.add(Group.objects.get(name=VIEWER))
    nobody = django_user_model.objects.create_user(username="n", password="x", is_staff=True)
    as_viewer, as_nobody = Client(), Client()
    as_viewer.force_login(viewer)
    as_nobody.force_login(nobody)

    assert as_viewer.get(AGING).status_code == 200
    assert as_viewer.get(CSV).status_code == 200
    assert as_nobody.get(AGING).status_code == 403
    assert as_nobody.get(CSV).status_code == 403


def test_the_dashboard_shows_what_is_overdue_per_currency_linking_to_the_list(admin_client, world):
    html = unescape(admin_client.get(reverse("admin:index")).content.decode())

    assert 'id="attention-overdue"' in html
    assert "1,234.50 USD" in html and "5,000 JPY" in html
    assert reverse("admin:billing_invoice_changelist") + "?overdue=yes&currency=USD" in html
    assert AGING in html
