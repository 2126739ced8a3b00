from __future__ import annotations

from datetime import UTC, datetime

import factory

from customers.models import ConsumerMapping, Customer


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    key = factory.Sequence(lambda n: f"customer-{n}")
    name = factory.LazyAttribute(lambda o: o.key.replace("-", " ").title())
    email = factory.LazyAttribute(lambda o: f"billing@{o.key}.example")
    currency = "USD"
    timezone = "UTC"
    rail = "manual"
    parent = None
    # As the services default it: on for a subsidiary, off for a top-level customer.
    bill_to_parent = factory.LazyAttribute(lambda o: o.parent is not None)


class ConsumerMappingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConsumerMapping

    consumer_key = factory.Sequence(lambda n: f"consumer-{n}")
    customer = factory.SubFactory(CustomerFactory)
    valid_from = datetime(2026, 1, 1, tzinfo=UTC)
    valid_to = None
