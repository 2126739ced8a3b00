"""Test data, built through the services as the product builds it.

The usual world: a billing account ``CustomerFactory`` (a subsidiary with ``parent=``),
a meter and feature (``FeatureFactory``: ``api_requests`` counted as ``api_calls``), the
Pro plan (``PlanVersionFactory``: USD monthly, a $49.00 platform fee in arrears, and
``feature=`` priced per unit), a subscription to it from October 2026
(``SubscriptionFactory``), and invoices with manual lines (``InvoiceFactory``, issued
with ``IssuedInvoiceFactory``; issuing opens the settlement: ``SettlementFactory``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import factory

from billing.catalog.periods import Period
from billing.catalog.services import PlanVersionSpec, RateCardSpec, plan_save, subscription_create
from billing.invoicing.services import (
    credit_note_create,
    invoice_draft_for,
    invoice_issue,
    invoice_line_add,
)
from billing.models import Grant, Invoice, PlanVersion, Subscription, TaxRate
from customers.models import ConsumerMapping, Customer
from metering.models import Feature, Meter
from metering.services import feature_create, meter_create
from rails.models import Settlement

OCT = datetime(2026, 10, 1, tzinfo=UTC)


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


class MeterFactory(factory.django.DjangoModelFactory):
    """A meter saved by ``meter_create``: API requests, counted."""

    class Meta:
        model = Meter

    key = "api_requests"
    event_type = "request"
    aggregation = "COUNT"

    @classmethod
    def _create(cls, model_class, **fields):
        return meter_create(**fields)


class FeatureFactory(factory.django.DjangoModelFactory):
    """A feature saved by ``feature_create``: the whole of its meter (a new API requests
    meter unless one is given)."""

    class Meta:
        model = Feature

    key = "api_calls"
    name = "API calls"
    meter = factory.SubFactory(MeterFactory)

    @classmethod
    def _create(cls, model_class, **fields):
        return feature_create(**fields)


def flat_fee(
    amount: str = "49.00", *, timing: str = "in_arrears", key="platform", name="Platform fee"
) -> RateCardSpec:
    """A flat fee per period, as a plan's rate card."""
    return RateCardSpec(
        key=key, name=name, price={"model": "flat", "amount": amount, "timing": timing}
    )


def unit_price(feature: Feature, unit_price: str = "0.01", *, key="calls") -> RateCardSpec:
    """A per-unit usage price on ``feature``, as a plan's rate card."""
    return RateCardSpec(key=key, feature=feature, price={"model": "unit", "unit_price": unit_price})


class PlanVersionFactory(factory.Factory):
    """A plan saved by ``plan_save``, answering its version. By default the Pro plan: USD,
    monthly, a $49.00 platform fee in arrears and, with ``feature``, that feature at
    ``unit_price`` a unit. ``rate_cards`` replaces both; ``free=True`` makes it the Free
    plan."""

    class Meta:
        model = PlanVersion

    class Params:
        fee = flat_fee()
        feature = None
        unit_price = "0.01"
        # The Free plan: no fee, the feature at no charge (what its entitlements allow).
        free = factory.Trait(key="free", name="Free", fee=None, unit_price="0")

    key = "pro"
    name = "Pro"
    currency = "USD"
    cadence = "monthly"
    minimum_commitment = Decimal(0)
    rate_cards = factory.LazyAttribute(
        lambda o: tuple(
            card
            for card in (o.fee, o.feature and unit_price(o.feature, o.unit_price))
            if card is not None
        )
    )
    entitlements = ()

    @classmethod
    def _create(cls, model_class, *, key, name, **spec):
        return plan_save(key=key, name=name, spec=PlanVersionSpec(**spec))[1]

    @classmethod
    def _build(cls, model_class, *args, **kwargs):
        raise NotImplementedError("A plan version is only made by plan_save: create it.")


class SubscriptionFactory(factory.django.DjangoModelFactory):
    """A subscription made by ``subscription_create``: a new customer on the Pro plan
    from October 2026."""

    class Meta:
        model = Subscription

    customer = factory.SubFactory(CustomerFactory)
    plan_version = factory.SubFactory(PlanVersionFactory)
    start = OCT

    @classmethod
    def _create(cls, model_class, **fields):
        return subscription_create(**fields)


class InvoiceFactory(factory.django.DjangoModelFactory):
    """A one-off draft in its customer's currency with manual ``lines``, each
    ``(description, amount)`` added by ``invoice_line_add`` at ``now``; the usage is
    ``line_customer``'s when given (a subsidiary's, on its billing account's invoice)."""

    class Meta:
        model = Invoice

    customer = factory.SubFactory(CustomerFactory)
    currency = factory.LazyAttribute(lambda o: o.customer.currency)
    lines = (("Consulting", "120.50"),)
    line_customer = None
    now = datetime(2026, 11, 2, tzinfo=UTC)

    @classmethod
    def _create(cls, model_class, *, lines, line_customer, now, **fields):
        invoice = model_class.objects.create(**fields)
        for description, amount in lines:
            invoice_line_add(
                invoice=invoice,
                description=description,
                amount=Decimal(amount),
                customer=line_customer,
                now=now,
            )
        return invoice


class IssuedInvoiceFactory(InvoiceFactory):
    """An ``InvoiceFactory`` draft issued by ``invoice_issue`` at ``now`` (which runs the
    issue hooks: with the default settings, the settlement opens)."""

    @classmethod
    def _create(cls, model_class, *, now, **fields):
        draft = super()._create(model_class, now=now, **fields)
        return invoice_issue(invoice=draft, now=now)


class SettlementFactory(factory.Factory):
    """The settlement that issuing an invoice opened (an issued ``invoice``, by default a
    new one on a new customer's rail)."""

    class Meta:
        model = Settlement

    invoice = factory.SubFactory(IssuedInvoiceFactory)

    @classmethod
    def _create(cls, model_class, *, invoice):
        return model_class.objects.get(invoice=invoice)


def api_world() -> dict[str, list]:
    """A small world for API tests, and its keys and ids by the resource they name:
    a meter and a feature (``api_requests``, ``flights``), a plan ``pro`` with a fee, a
    usage price and an entitlement, a tax rate ``vat``, a billing account ``acme`` with a
    subsidiary ``acme-eu``, a consumer ``acme-gw``, a subscription from 2026-10-01, a
    grant, October's invoice issued with a credit note, and November's draft."""
    oct_, nov, dec = (datetime(2026, month, 1, tzinfo=UTC) for month in (10, 11, 12))
    requests = MeterFactory(group_by={"route": "$.route", "status": "$.status"})
    flights = FeatureFactory(
        key="flights", name="Flights", meter=requests, filters={"route": ["/flights"]}
    )
    version = PlanVersionFactory(
        rate_cards=(flat_fee(), unit_price(flights, key="flights")),
        entitlements=(
            {
                "feature": "flights",
                "type": "metered",
                "limit": 500,
                "period": "monthly",
                "hard": True,
            },
        ),
    )
    TaxRate.objects.create(key="vat", name="VAT", percentage=Decimal(19))
    acme = CustomerFactory(key="acme", name="Acme")
    CustomerFactory(key="acme-eu", name="Acme EU", parent=acme)
    mapping = ConsumerMappingFactory(consumer_key="acme-gw", customer=acme, valid_from=oct_)
    subscription = SubscriptionFactory(customer=acme, plan_version=version, start=oct_)
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
