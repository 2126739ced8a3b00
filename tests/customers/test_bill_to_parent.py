"""Only a subsidiary can be billed to its parent: on by default for a subsidiary, off for
a top-level customer, and refused on a top-level customer with an error naming the field
wherever it is set (service, database, API, admin form, configuration file)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from customers.models import Customer
from customers.services import customer_create, customer_update
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

REFUSED = "A customer without a parent cannot be billed to its parent"


def test_the_default_is_on_for_a_subsidiary_and_off_for_a_top_level_customer():
    globex = customer_create(key="globex", name="Globex")
    eu = customer_create(key="globex-eu", name="Globex EU", parent=globex)
    assert (globex.bill_to_parent, eu.bill_to_parent) == (False, True)


def test_a_top_level_customer_billed_to_its_parent_is_refused_naming_the_field():
    with pytest.raises(ValidationError) as refused:
        customer_create(key="globex", name="Globex", bill_to_parent=True)
    assert REFUSED in refused.value.message_dict["bill_to_parent"][0]
    globex = customer_create(key="globex", name="Globex")
    with pytest.raises(ValidationError) as refused:
        customer_update(customer=globex, bill_to_parent=True)
    assert "bill_to_parent" in refused.value.message_dict
    assert Customer.objects.get(key="globex").bill_to_parent is False


def test_moving_in_or_out_of_a_tree_takes_the_default_of_the_new_place():
    globex = CustomerFactory(key="globex")
    initech = CustomerFactory(key="initech")
    eu = CustomerFactory(key="globex-eu", parent=globex)

    assert customer_update(customer=eu, parent=None).bill_to_parent is False
    assert customer_update(customer=initech, parent=globex).bill_to_parent is True
    apac = CustomerFactory(key="globex-apac", parent=globex, bill_to_parent=False)
    assert customer_update(customer=apac, parent=initech).bill_to_parent is False  # kept
    with pytest.raises(ValidationError):
        customer_update(customer=initech, parent=None, bill_to_parent=True)


def test_the_database_refuses_a_top_level_customer_billed_to_its_parent():
    globex = CustomerFactory(key="globex")
    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.filter(pk=globex.pk).update(bill_to_parent=True)


def test_the_api_answers_400_naming_bill_to_parent(api):
    response = api.post(
        "/api/v1/customers",
        {"key": "globex", "name": "Globex", "bill_to_parent": True},
        format="json",
    )
    assert response.status_code == 400, response.json()
    assert REFUSED in response.json()["errors"]["bill_to_parent"][0]
    assert not Customer.objects.exists()

    globex = {"key": "globex", "name": "Globex"}
    assert api.post("/api/v1/customers", globex, format="json").status_code == 201
    response = api.patch("/api/v1/customers/globex", {"bill_to_parent": True}, format="json")
    assert response.status_code == 400
    assert "bill_to_parent" in response.json()["errors"]
    eu = {"key": "eu", "name": "EU", "parent": "globex"}
    eu = api.post("/api/v1/customers", eu, format="json").json()
    assert eu["bill_to_parent"] is True


def admin_form(customer: Customer | None = None, **changes) -> dict:
    data = {
        "key": "globex",
        "name": "Globex",
        "email": "",
        "currency": "USD",
        "timezone": "UTC",
        "parent": "",
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
        "subsidiaries-TOTAL_FORMS": "0",
        "subsidiaries-INITIAL_FORMS": "0",
    }
    if customer is not None and customer.bill_to_parent:
        data["bill_to_parent"] = "on"
    return {**data, **changes}


def test_the_admin_form_refuses_ticking_it_for_a_top_level_customer(admin_client):
    globex = CustomerFactory(key="globex", name="Globex")
    url = reverse("admin:customers_customer_change", args=[globex.pk])
    response = admin_client.post(url, admin_form(globex, bill_to_parent="on"))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["bill_to_parent"] == [
        REFUSED + ": choose its parent, or leave bill to parent off."
    ]
    assert Customer.objects.get(pk=globex.pk).bill_to_parent is False


def test_the_admin_add_form_offers_the_subsidiary_default_and_a_top_level_customer_is_off(
    admin_client,
):
    add = reverse("admin:customers_customer_add")
    assert admin_client.get(add).context["adminform"].form["bill_to_parent"].value() is True
    response = admin_client.post(add, admin_form(bill_to_parent="on"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    globex = Customer.objects.get(key="globex")
    assert globex.bill_to_parent is False
    response = admin_client.post(
        add, admin_form(key="globex-eu", name="EU", parent=globex.pk, bill_to_parent="on")
    )
    assert response.status_code == 302
    assert Customer.objects.get(key="globex-eu").bill_to_parent is True


def test_a_subsidiary_detached_in_the_admin_is_billed_on_its_own(admin_client):
    globex = CustomerFactory(key="globex")
    eu = CustomerFactory(key="globex-eu", name="EU", parent=globex)
    url = reverse("admin:customers_customer_change", args=[eu.pk])
    response = admin_client.post(url, admin_form(eu, key="globex-eu", name="EU", parent=""))
    assert response.status_code == 302, response.context["adminform"].form.errors
    eu.refresh_from_db()
    assert (eu.parent, eu.bill_to_parent) == (None, False)


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_it_off_for_top_level_customers_already_stored():
    before, after = (
        ("customers", "0003_consumermappingchange"),
        (
            "customers",
            "0004_top_level_not_billed_to_parent",
        ),
    )
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO customers_customer (key, name, email, address_line1, address_line2,"
                " city, region, postal_code, country, tax_id, currency, timezone, bill_to_parent,"
                " rail, rail_settings, created_at, updated_at) VALUES ('old', 'Old', '', '', '',"
                " '', '', '', '', '', 'USD', 'UTC', true, 'manual', '{}', now(), now())"
                " RETURNING id"
            )
            old = cursor.fetchone()[0]
            cursor.execute(
                "INSERT INTO customers_customer (key, name, email, address_line1, address_line2,"
                " city, region, postal_code, country, tax_id, currency, timezone, bill_to_parent,"
                " rail, rail_settings, created_at, updated_at, parent_id) VALUES ('old-eu', 'EU',"
                " '', '', '', '', '', '', '', '', 'USD', 'UTC', true, 'manual', '{}', now(),"
                " now(), %s)",
                [old],
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert after in MigrationExecutor(connection).loader.applied_migrations
    assert dict(Customer.objects.values_list("key", "bill_to_parent")) == {
        "old": False,
        "old-eu": True,
    }
