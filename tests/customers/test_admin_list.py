"""The customers' admin list: each customer with the rail its invoices settle on."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def globex():
    globex = CustomerFactory(key="globex", name="Globex Corporation", rail="ach")
    # A subsidiary billed to its parent keeps a rail field of its own, never used.
    eu = CustomerFactory(key="globex-eu", name="Globex Europe", parent=globex, rail="stripe")
    CustomerFactory(key="globex-eu-lab", name="Globex Lab", parent=eu, rail="manual")
    CustomerFactory(
        key="globex-apac", name="Globex APAC", parent=globex, bill_to_parent=False, rail="stripe"
    )
    CustomerFactory(key="acme", name="Acme", rail="manual")
    return globex


def rails_column(page: str) -> list[str]:
    return re.findall(r'<td class="field-rail_settled_on">([^<]*)</td>', page)


def test_a_subsidiary_billed_to_its_parent_shows_the_rail_it_settles_on(admin_client, globex):
    page = admin_client.get(reverse("admin:customers_customer_changelist"))
    rows = dict(
        zip(
            [c.key for c in page.context["cl"].result_list],
            rails_column(page.content.decode()),
            strict=True,
        )
    )
    assert rows == {
        "acme": "Manual",
        "globex": "ACH",
        "globex-apac": "Stripe",
        "globex-eu": "ACH (via Globex Corporation)",
        "globex-eu-lab": "ACH (via Globex Corporation)",
    }


def test_the_rail_filter_finds_customers_by_the_rail_they_settle_on(admin_client, globex):
    url = reverse("admin:customers_customer_changelist")
    on_ach = admin_client.get(url, {"settles_on": "ach"}).context["cl"].result_list
    assert sorted(c.key for c in on_ach) == ["globex", "globex-eu", "globex-eu-lab"]
    on_stripe = admin_client.get(url, {"settles_on": "stripe"}).context["cl"].result_list
    assert [c.key for c in on_stripe] == ["globex-apac"]


def test_the_subsidiaries_inline_shows_the_rail_each_settles_on(admin_client, globex):
    page = admin_client.get(reverse("admin:customers_customer_change", args=[globex.pk]))
    cells = re.findall(r'field-rail_settled_on">\s*<p>([^<]*)</p>', page.content.decode())
    assert cells == ["Stripe", "ACH (via Globex Corporation)"]  # globex-apac, globex-eu


def test_customers_are_listed_by_name(admin_client, globex):
    listing = admin_client.get(reverse("admin:customers_customer_changelist")).context["cl"]
    assert [c.name for c in listing.result_list] == [
        "Acme",
        "Globex APAC",
        "Globex Corporation",
        "Globex Europe",
        "Globex Lab",
    ]


def test_rails_are_named_as_the_products_spell_them(admin_client):
    globex = CustomerFactory(key="globex", name="Globex Corporation", rail="netsuite")
    CustomerFactory(key="globex-eu", name="Globex Europe", parent=globex)
    page = admin_client.get(reverse("admin:customers_customer_changelist"))
    assert rails_column(page.content.decode()) == ["NetSuite", "NetSuite (via Globex Corporation)"]
    filters = page.content.decode()
    assert ">NetSuite</a>" in filters and ">ACH</a>" in filters and "Netsuite" not in filters
