import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from customers.models import Customer
from customers.selectors import (
    billed_customer_ids,
    billing_account_ids,
    customer_ancestors,
    customer_billing_account,
    customer_descendants,
)
from customers.services import customer_create, customer_update
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def tree():
    """globex ← globex-eu ← globex-de ← globex-de-berlin (all billed to parent), and
    globex-us (billed on its own) ← globex-us-west (billed to parent)."""
    globex = CustomerFactory(key="globex")
    eu = CustomerFactory(key="globex-eu", parent=globex)
    de = CustomerFactory(key="globex-de", parent=eu)
    berlin = CustomerFactory(key="globex-de-berlin", parent=de)
    us = CustomerFactory(key="globex-us", parent=globex, bill_to_parent=False)
    west = CustomerFactory(key="globex-us-west", parent=us)
    return {c.key: c for c in [globex, eu, de, berlin, us, west]}


def test_a_subsidiary_is_billed_on_its_nearest_ancestor_not_billed_to_its_parent(tree):
    assert customer_billing_account(customer=tree["globex-de-berlin"]).key == "globex"
    assert customer_billing_account(customer=tree["globex-us-west"]).key == "globex-us"
    assert customer_billing_account(customer=tree["globex-us"]).key == "globex-us"
    assert customer_billing_account(customer=tree["globex"]).key == "globex"


def test_billing_accounts_resolve_for_many_customers_in_one_query(tree, django_assert_num_queries):
    ids = [c.pk for c in tree.values()]
    with django_assert_num_queries(1):
        accounts = billing_account_ids(customer_ids=ids)
    by_key = {c.key: accounts[c.pk] for c in tree.values()}
    assert by_key == {
        "globex": tree["globex"].pk,
        "globex-eu": tree["globex"].pk,
        "globex-de": tree["globex"].pk,
        "globex-de-berlin": tree["globex"].pk,
        "globex-us": tree["globex-us"].pk,
        "globex-us-west": tree["globex-us"].pk,
    }


def test_the_billed_tree_stops_at_subsidiaries_billed_on_their_own(tree):
    billed = set(
        Customer.objects.filter(pk__in=billed_customer_ids(account=tree["globex"])).values_list(
            "key", flat=True
        )
    )
    assert billed == {"globex", "globex-eu", "globex-de", "globex-de-berlin"}


def test_ancestors_and_descendants_walk_any_depth(tree):
    assert [c.key for c in customer_ancestors(customer=tree["globex-de-berlin"])] == [
        "globex",
        "globex-eu",
        "globex-de",
    ]
    assert [(c.key, d) for c, d in customer_descendants(customer=tree["globex-eu"])] == [
        ("globex-eu", 0),
        ("globex-de", 1),
        ("globex-de-berlin", 2),
    ]


def test_a_cycle_is_rejected_by_the_service_with_the_path(tree):
    with pytest.raises(ValidationError) as exc:
        customer_update(customer=tree["globex"], parent=tree["globex-de-berlin"])
    message = exc.value.message_dict["parent"][0]
    assert "cycle" in message and "globex-de-berlin" in message
    tree["globex"].refresh_from_db()
    assert tree["globex"].parent is None


def test_being_ones_own_parent_is_rejected(tree):
    with pytest.raises(ValidationError, match="own parent"):
        customer_update(customer=tree["globex"], parent=tree["globex"])


def test_a_cycle_is_rejected_by_the_database_itself(tree):
    with pytest.raises(IntegrityError, match="customer_no_cycle"), transaction.atomic():
        Customer.objects.filter(pk=tree["globex"].pk).update(parent=tree["globex-de"])
    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.filter(pk=tree["globex"].pk).update(parent=tree["globex"])


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_reparentings_cannot_make_a_cycle_together():
    a = CustomerFactory(key="a")
    b = CustomerFactory(key="b")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def move(child_pk: int, parent_pk: int) -> None:
        try:
            with transaction.atomic():
                barrier.wait()
                Customer.objects.filter(pk=child_pk).update(parent_id=parent_pk)
                # hold the transaction open so both updates overlap
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_sleep(0.2)")
            outcomes.append("ok")
        except IntegrityError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [
        threading.Thread(target=move, args=(a.pk, b.pk)),
        threading.Thread(target=move, args=(b.pk, a.pk)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "refused"]


def test_customer_fields_are_validated_before_anything_is_written():
    with pytest.raises(ValidationError) as exc:
        customer_create(
            key="bad key!", name="X", currency="XYZ", timezone="Mars/Olympus", rail="carrier-pigeon"
        )
    assert set(exc.value.message_dict) >= {"key", "currency", "timezone", "rail"}
    assert not Customer.objects.exists()
