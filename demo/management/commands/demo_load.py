from __future__ import annotations

from datetime import UTC, datetime

from django.core.management.base import BaseCommand
from django.db import transaction

from customers.models import ConsumerMapping, Customer
from customers.services import consumer_mapping_create, customer_create

OCT_1 = datetime(2026, 10, 1, tzinfo=UTC)
OCT_15 = datetime(2026, 10, 15, tzinfo=UTC)

# An API and AI business's customers: a parent company with subsidiaries invoiced in
# NetSuite, a self-service customer paying by card, and one debited by ACH.
CUSTOMERS = [
    {
        "key": "globex",
        "name": "Globex Corporation",
        "email": "ap@globex.example",
        "rail": "netsuite",
        "rail_settings": {"netsuite_entity_id": "1234"},
        "address_line1": "1 Globex Plaza",
        "city": "Cypress Creek",
        "region": "OR",
        "postal_code": "97401",
        "country": "US",
        "tax_id": "94-1234567",
        "timezone": "America/Los_Angeles",
        "consumers": [("globex-hq-gw", OCT_1, None)],
        "subsidiaries": [
            {
                "key": "globex-eu",
                "name": "Globex Europe GmbH",
                "country": "DE",
                "city": "Berlin",
                "consumers": [("globex-eu-gw", OCT_1, None), ("shared-gw", OCT_1, OCT_15)],
                "subsidiaries": [
                    {
                        "key": "globex-eu-research",
                        "name": "Globex Research Lab",
                        "country": "DE",
                        "consumers": [("shared-gw", OCT_15, None)],
                    }
                ],
            },
            {
                "key": "globex-apac",
                "name": "Globex APAC Pte. Ltd.",
                "country": "SG",
                "timezone": "Asia/Singapore",
                "consumers": [("globex-apac-gw", OCT_1, None)],
            },
        ],
    },
    {
        "key": "initech",
        "name": "Initech LLC",
        "email": "finance@initech.example",
        "rail": "ach",
        "rail_settings": {
            "routing_number": "021000021",
            "account_number": "000123456789",
            "account_type": "checking",
            "mandate_date": "2026-09-15",
        },
        "address_line1": "4120 Freidrich Lane",
        "city": "Austin",
        "region": "TX",
        "postal_code": "78744",
        "country": "US",
        "consumers": [("initech-prod", OCT_1, None)],
    },
    {
        "key": "hooli-dev",
        "name": "Hooli Developer Account",
        "email": "dev@hooli.example",
        "rail": "stripe",
        "country": "US",
        "consumers": [("hooli-app-1", OCT_1, None)],
    },
]


class Command(BaseCommand):
    help = "Load the example data set (safe to run again: existing records are left as they are)."

    @transaction.atomic
    def handle(self, *args, **options):
        created = sum(self._customer(spec, parent=None) for spec in CUSTOMERS)
        self.stdout.write(
            f"Example data: {created} customers created, {Customer.objects.count()} in all."
        )

    def _customer(self, spec: dict, *, parent: Customer | None) -> int:
        fields = {k: v for k, v in spec.items() if k not in {"consumers", "subsidiaries"}}
        customer = Customer.objects.filter(key=fields["key"]).first()
        created = 0
        if customer is None:
            if parent is not None:
                fields.setdefault("currency", parent.currency)
            customer = customer_create(parent=parent, **fields)
            created = 1
        for consumer_key, valid_from, valid_to in spec.get("consumers", []):
            if not ConsumerMapping.objects.filter(
                consumer_key=consumer_key, valid_from=valid_from
            ).exists():
                consumer_mapping_create(
                    consumer_key=consumer_key,
                    customer=customer,
                    valid_from=valid_from,
                    valid_to=valid_to,
                )
        for child in spec.get("subsidiaries", []):
            created += self._customer(child, parent=customer)
        return created
