from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

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


def api_world() -> dict[str, list]:
    """A small world for API tests, and its keys and ids by the resource they name:
    a meter and a feature (``api_requests``, ``flights``), a plan ``pro`` with a fee, a
    usage price and an entitlement, a tax rate ``vat``, a billing account ``acme`` with a
    subsidiary ``acme-eu``, a consumer ``acme-gw``, a subscription from 2026-10-01, a
    grant, October's invoice issued with a credit note, and November's draft."""
    from billing.invoicing import credit_note_create, invoice_draft_for, invoice_issue
    from billing.models import Grant, TaxRate
    from billing.periods import Period
    from billing.services import PlanVersionSpec, RateCardSpec, plan_save, subscription_create
    from metering.services import feature_create, meter_create

    oct_, nov, dec = (datetime(2026, month, 1, tzinfo=UTC) for month in (10, 11, 12))
    requests = meter_create(
        key="api_requests",
        event_type="request",
        aggregation="COUNT",
        group_by={"route": "$.route", "status": "$.status"},
    )
    flights = feature_create(
        key="flights", name="Flights", meter=requests, filters={"route": ["/flights"]}
    )
    _, version, _ = plan_save(
        key="pro",
        name="Pro",
        spec=PlanVersionSpec(
            currency="USD",
            cadence="monthly",
            minimum_commitment=Decimal(0),
            rate_cards=(
                RateCardSpec(
                    key="platform",
                    name="Platform fee",
                    price={"model": "flat", "amount": "49.00", "timing": "in_arrears"},
                ),
                RateCardSpec(
                    key="flights", feature=flights, price={"model": "unit", "unit_price": "0.01"}
                ),
            ),
            entitlements=(
                {
                    "feature": "flights",
                    "type": "metered",
                    "limit": 500,
                    "period": "monthly",
                    "hard": True,
                },
            ),
        ),
    )
    TaxRate.objects.create(key="vat", name="VAT", percentage=Decimal(19))
    acme = CustomerFactory(key="acme", name="Acme")
    CustomerFactory(key="acme-eu", name="Acme EU", parent=acme)
    mapping = ConsumerMappingFactory(consumer_key="acme-gw", customer=acme, valid_from=oct_)
    subscription = subscription_create(customer=acme, plan_version=version, start=oct_)
    grant = Grant.objects.create(
        customer=acme, feature=flights, amount=Decimal(100), effective_at=oct_, reason="launch"
    )
    issued = invoice_issue(
        invoice=invoice_draft_for(account=acme, period=Period(oct_, nov), now=nov)[0],
        now=nov + timedelta(days=1),
    )
    draft = invoice_draft_for(account=acme, period=Period(nov, dec), now=dec)[0]
    note = credit_note_create(
        invoice=issued, reason="goodwill", amount=Decimal("1.00"), now=nov + timedelta(days=2)
    )
    return {
        "customers": ["acme", "acme-eu"],
        "plans": ["pro"],
        "meters": ["api_requests"],
        "features": ["flights"],
        "tax-rates": ["vat"],
        "consumers": ["acme-gw"],
        "consumer-mappings": [mapping.pk],
        "subscriptions": [subscription.pk],
        "grants": [grant.pk],
        "invoices": [str(issued.pk), issued.number, str(draft.pk)],
        "lines": list(issued.lines.values_list("pk", flat=True)),
        "credit-notes": [str(note.pk), note.number],
        "versions": [1],
    }
