"""Every admin page loads for a superuser, and the customer admin's own views work."""

import re
from datetime import UTC, datetime

import pytest
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse

from core.models import ApiKey
from core.services import api_key_create
from customers.models import ConsumerMapping, Customer
from tests.factories import ConsumerMappingFactory, CustomerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def populated(admin_user):
    parent = CustomerFactory(key="globex")
    child = CustomerFactory(key="globex-eu", parent=parent)
    ConsumerMappingFactory(consumer_key="gw-1", customer=child)
    api_key_create(name="kong", scopes=["ingest"])
    return parent


def test_every_admin_page_loads_for_a_superuser(admin_client, admin_user, populated):
    request = RequestFactory().get("/")
    request.user = admin_user
    assert admin_client.get(reverse("admin:index")).status_code == 200
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        assert admin_client.get(changelist).status_code == 200, changelist
        assert admin_client.get(changelist, {"q": "globex"}).status_code == 200, changelist
        if model_admin.has_add_permission(request):
            add = reverse(f"admin:{opts.app_label}_{opts.model_name}_add")
            assert admin_client.get(add).status_code == 200, add
        obj = model.objects.first()
        if obj is not None:
            change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
            assert admin_client.get(change).status_code == 200, change


def test_the_customer_page_shows_its_place_in_the_tree(admin_client, populated):
    child = populated.subsidiaries.get()
    page = admin_client.get(
        reverse("admin:customers_customer_change", args=[child.pk])
    ).content.decode()
    assert "globex" in page and "(this customer)" in page and "billed on globex" in page


def test_search_finds_a_customer_by_consumer_key(admin_client, populated):
    page = admin_client.get(
        reverse("admin:customers_customer_changelist"), {"q": "gw-1"}
    ).content.decode()
    assert "globex-eu" in page


def test_the_admin_refuses_a_cycle_with_a_clear_error(admin_client, populated):
    url = reverse("admin:customers_customer_change", args=[populated.pk])
    data = {
        "key": "globex",
        "name": "Globex",
        "email": "",
        "currency": "USD",
        "timezone": "UTC",
        "parent": populated.subsidiaries.get().pk,
        "bill_to_parent": "on",
        "rail": "manual",
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
        "subsidiaries-TOTAL_FORMS": "1",
        "subsidiaries-INITIAL_FORMS": "1",
        "subsidiaries-0-id": populated.subsidiaries.get().pk,
        "subsidiaries-0-parent": populated.pk,
    }
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "would create a cycle" in response.content.decode()
    populated.refresh_from_db()
    assert populated.parent is None


def test_the_admin_names_the_overlapping_mapping(admin_client, populated):
    existing = ConsumerMapping.objects.get()
    response = admin_client.post(
        reverse("admin:customers_consumermapping_add"),
        {
            "consumer_key": "gw-1",
            "customer": populated.pk,
            "valid_from_0": "2026-06-01",
            "valid_from_1": "00:00:00",
        },
    )
    assert response.status_code == 200
    assert f"#{existing.pk}" in response.content.decode()
    assert ConsumerMapping.objects.count() == 1


def test_the_move_view_moves_a_key_in_one_step(admin_client, populated):
    url = reverse("admin:customers_consumermapping_move")
    assert admin_client.get(url, {"consumer_key": "gw-1"}).status_code == 200
    response = admin_client.post(
        url, {"consumer_key": "gw-1", "to_customer": populated.pk, "at": "2026-11-01 00:00:00"}
    )
    assert response.status_code == 302
    rows = list(
        ConsumerMapping.objects.order_by("valid_from").values_list("customer__key", "valid_to")
    )
    assert rows == [("globex-eu", datetime(2026, 11, 1, tzinfo=UTC)), ("globex", None)]


def test_creating_an_api_key_in_the_admin_shows_the_secret_once(admin_client):
    response = admin_client.post(
        reverse("admin:core_apikey_add"),
        {"name": "kong-eu", "scopes": ["ingest", "read"]},
        follow=True,
    )
    page = response.content.decode()
    key = ApiKey.objects.get(name="kong-eu")
    assert f"ubk_{key.prefix}_" in page
    change_page = admin_client.get(
        reverse("admin:core_apikey_change", args=[key.pk])
    ).content.decode()
    assert f"ubk_{key.prefix}_" not in change_page


def test_the_admin_encrypts_an_ach_account_number_and_explains_a_bad_routing_number(admin_client):
    from customers.models import Customer

    data = {
        "key": "initech",
        "name": "Initech",
        "email": "",
        "currency": "USD",
        "timezone": "UTC",
        "rail": "ach",
        "rail_settings": '{"routing_number": "021000021", "account_number": "000123456789", '
        '"account_type": "checking", "mandate_date": "2026-09-15"}',
        "bill_to_parent": "on",
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
    bad = admin_client.post(
        reverse("admin:customers_customer_add"),
        {**data, "rail_settings": data["rail_settings"].replace("021000021", "021000022")},
    )
    assert (
        bad.status_code == 200
        and "routing" in bad.content.decode()
        and not Customer.objects.exists()
    )
    assert admin_client.post(reverse("admin:customers_customer_add"), data).status_code == 302
    stored = Customer.objects.get(key="initech").rail_settings
    assert "account_number" not in stored and stored["account_last4"] == "6789"
    assert "000123456789" not in str(stored)


# ------------------------------------------------------------------ the company tree


def tree_of(html: str) -> list[tuple[str, int, str]]:
    """(key, depth, drawing before it) of each row of the tree, top to bottom: the
    drawing is ``|`` for a guide line running through, ``.`` for an empty guide, ``├``
    or ``└`` for the row's own branch."""
    rows = re.findall(
        r'<div class="tree-row"[^>]*data-depth="(\d+)" data-key="([^"]+)">(.*?)<span class="tree-label">',
        html,
        re.S,
    )
    drawn = []
    for depth, key, prefix in rows:
        marks = re.findall(r'class="tree-(guide|branch)( through| last)?"', prefix)
        drawing = "".join(
            ("|" if extra else ".") if kind == "guide" else ("└" if extra else "├")
            for kind, extra in marks
        )
        drawn.append((key, int(depth), drawing))
    return drawn


@pytest.fixture
def globex_tree():
    """globex → globex-eu → globex-eu-research, and globex → globex-apac → globex-apac-jp
    (created in an order that breadth first and by id would both get wrong)."""
    root = CustomerFactory(key="globex")
    eu = CustomerFactory(key="globex-eu", parent=root)
    CustomerFactory(key="globex-eu-research", parent=eu)
    apac = CustomerFactory(key="globex-apac", parent=root, bill_to_parent=False)
    CustomerFactory(key="globex-apac-jp", parent=apac)
    return root


EXPECTED_TREE = [
    ("globex", 0, ""),
    ("globex-apac", 1, "├"),
    ("globex-apac-jp", 2, "|└"),  # the line down to globex-eu runs past it
    ("globex-eu", 1, "└"),
    ("globex-eu-research", 2, ".└"),
]


def test_the_overview_draws_each_customer_under_its_parent_depth_first(admin_client, globex_tree):
    html = admin_client.get(
        reverse("admin:customers_customer_overview", args=[globex_tree.pk])
    ).content.decode()
    assert tree_of(html) == EXPECTED_TREE
    assert "<strong>globex</strong> (this customer)" in html
    assert re.search(r'data-key="globex-apac-jp">.*?billed on globex-apac<', html, re.S)


def test_the_customer_page_draws_the_same_tree(admin_client, globex_tree):
    html = admin_client.get(
        reverse("admin:customers_customer_change", args=[globex_tree.pk])
    ).content.decode()
    assert tree_of(html) == EXPECTED_TREE


def test_a_sub_subsidiary_sees_its_ancestors_above_it(admin_client, globex_tree):
    research = Customer.objects.get(key="globex-eu-research")
    html = admin_client.get(
        reverse("admin:customers_customer_overview", args=[research.pk])
    ).content.decode()
    assert tree_of(html) == [
        ("globex", 0, ""),
        ("globex-eu", 1, "└"),
        ("globex-eu-research", 2, ".└"),
    ]
    assert "<strong>globex-eu-research</strong> (this customer)" in html


# ------------------------------------------------------------------ the ACH files list


def test_the_ach_files_list_puts_its_notes_below_the_buttons(admin_client):
    html = admin_client.get(reverse("admin:rails_achfile_changelist")).content.decode()
    tools = html.index('<ul class="object-tools">')
    intro = html.index('id="ach-intro"')
    results = html.index('id="changelist"')
    assert tools < intro < results  # buttons beside the title, then the notes, then the list
    assert re.search(r'id="ach-intro" style="clear: both"', html)
    assert "The export puts every scheduled ACH debit" in html[intro:results]
