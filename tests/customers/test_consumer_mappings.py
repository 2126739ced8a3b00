from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from customers.models import ConsumerMapping
from customers.selectors import consumer_customer_at, consumers_resolve
from customers.services import consumer_key_move, consumer_mapping_create, consumer_mapping_update
from tests.factories import ConsumerMappingFactory, CustomerFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 10, 1, tzinfo=UTC)
T1 = datetime(2026, 10, 15, tzinfo=UTC)
T2 = datetime(2026, 11, 1, tzinfo=UTC)
US = timedelta(microseconds=1)


def test_resolution_is_half_open_at_the_exact_edges():
    acme, globex = CustomerFactory(key="acme"), CustomerFactory(key="globex")
    ConsumerMappingFactory(consumer_key="gw-1", customer=acme, valid_from=T0, valid_to=T1)
    ConsumerMappingFactory(consumer_key="gw-1", customer=globex, valid_from=T1)

    assert consumer_customer_at(consumer_key="gw-1", at=T0 - US) is None
    assert consumer_customer_at(consumer_key="gw-1", at=T0) == acme
    assert consumer_customer_at(consumer_key="gw-1", at=T1 - US) == acme
    assert consumer_customer_at(consumer_key="gw-1", at=T1) == globex
    assert consumer_customer_at(consumer_key="gw-1", at=datetime(2099, 1, 1, tzinfo=UTC)) == globex
    assert consumer_customer_at(consumer_key="gw-2", at=T1) is None


def test_many_pairs_resolve_in_one_query(django_assert_num_queries):
    acme, globex = CustomerFactory(key="acme"), CustomerFactory(key="globex")
    ConsumerMappingFactory(consumer_key="gw-1", customer=acme, valid_from=T0, valid_to=T1)
    ConsumerMappingFactory(consumer_key="gw-1", customer=globex, valid_from=T1)
    pairs = [
        ("gw-1", T0 - US),
        ("gw-1", T0),
        ("gw-1", T1 - US),
        ("gw-1", T1),
        ("nobody", T1),
    ] * 2000
    with django_assert_num_queries(1):
        resolved = consumers_resolve(pairs=pairs)
    assert resolved[:5] == [None, acme.pk, acme.pk, globex.pk, None]
    assert len(resolved) == len(pairs)


def test_the_database_refuses_overlapping_mappings_of_one_key():
    ConsumerMappingFactory(consumer_key="gw-1", valid_from=T0, valid_to=T2)
    other = CustomerFactory()
    with pytest.raises(IntegrityError, match="consumer_mapping_no_overlap"), transaction.atomic():
        ConsumerMapping.objects.create(consumer_key="gw-1", customer=other, valid_from=T1)
    # adjacent ranges do not overlap
    ConsumerMapping.objects.create(consumer_key="gw-1", customer=other, valid_from=T2)
    # another key is independent
    ConsumerMapping.objects.create(consumer_key="gw-2", customer=other, valid_from=T0)


def test_the_database_refuses_an_empty_range():
    with pytest.raises(IntegrityError, match="consumer_mapping_valid_range"), transaction.atomic():
        ConsumerMapping.objects.create(
            consumer_key="gw", customer=CustomerFactory(), valid_from=T1, valid_to=T1
        )


def test_the_service_names_the_conflicting_mapping():
    existing = ConsumerMappingFactory(
        consumer_key="gw-1", customer=CustomerFactory(key="acme"), valid_from=T0
    )
    with pytest.raises(ValidationError) as exc:
        consumer_mapping_create(
            consumer_key="gw-1", customer=CustomerFactory(), valid_from=T1, valid_to=T2
        )
    message = exc.value.message_dict["valid_from"][0]
    assert f"#{existing.pk}" in message and "acme" in message and "open-ended" in message
    assert ConsumerMapping.objects.count() == 1


def test_updating_a_mapping_into_an_overlap_is_refused_and_changes_nothing():
    first = ConsumerMappingFactory(consumer_key="gw-1", valid_from=T0, valid_to=T1)
    ConsumerMappingFactory(consumer_key="gw-1", valid_from=T1)
    with pytest.raises(ValidationError):
        consumer_mapping_update(mapping=first, valid_to=T2)
    first.refresh_from_db()
    assert first.valid_to == T1


def test_moving_a_key_closes_the_old_mapping_and_opens_the_new_one():
    acme, globex = CustomerFactory(key="acme"), CustomerFactory(key="globex")
    old = ConsumerMappingFactory(consumer_key="gw-1", customer=acme, valid_from=T0)
    new = consumer_key_move(consumer_key="gw-1", to_customer=globex, at=T1)
    old.refresh_from_db()
    assert (old.valid_from, old.valid_to) == (T0, T1)
    assert (new.customer, new.valid_from, new.valid_to) == (globex, T1, None)
    assert consumer_customer_at(consumer_key="gw-1", at=T1 - US) == acme
    assert consumer_customer_at(consumer_key="gw-1", at=T1) == globex


def test_moving_keeps_the_end_of_a_closed_mapping_and_later_mappings():
    acme, globex, initech = (
        CustomerFactory(key="acme"),
        CustomerFactory(key="globex"),
        CustomerFactory(key="initech"),
    )
    ConsumerMappingFactory(consumer_key="gw-1", customer=acme, valid_from=T0, valid_to=T2)
    later = ConsumerMappingFactory(consumer_key="gw-1", customer=initech, valid_from=T2)
    new = consumer_key_move(consumer_key="gw-1", to_customer=globex, at=T1)
    assert (new.valid_from, new.valid_to) == (T1, T2)
    later.refresh_from_db()
    assert later.valid_from == T2 and later.customer == initech


def test_moving_an_unmapped_key_maps_it_until_its_next_mapping():
    globex = CustomerFactory(key="globex")
    ConsumerMappingFactory(consumer_key="gw-1", valid_from=T2)
    new = consumer_key_move(consumer_key="gw-1", to_customer=globex, at=T0)
    assert (new.valid_from, new.valid_to) == (T0, T2)


def test_moving_to_the_same_customer_is_refused():
    acme = CustomerFactory(key="acme")
    ConsumerMappingFactory(consumer_key="gw-1", customer=acme, valid_from=T0)
    with pytest.raises(ValidationError, match="already belongs"):
        consumer_key_move(consumer_key="gw-1", to_customer=acme, at=T1)
