from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse
from django.utils import timezone

from billing.documents.links import portal_sign_in_path
from demo.services import demo_hosted_invoice


class Command(BaseCommand):
    help = (
        "Print the customer-facing links of the demo, one 'name value' pair a line: a "
        "signed hosted-invoice link (what a customer opens from the invoice email, no "
        "login), the portal and a one-time portal sign-in link (15 minutes)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--base",
            default="http://127.0.0.1:8000",
            help="The site's origin, e.g. https://billing.example.com",
        )

    def handle(self, *args, base: str, **options):
        now = timezone.now()
        found = demo_hosted_invoice(now=now)
        if found is None:
            raise CommandError("No issued invoice yet: run 'manage.py demo_load' first.")
        invoice, path = found
        base = base.rstrip("/")
        customer = invoice.customer
        self.stdout.write(f"invoice {base}{path}")
        self.stdout.write(f"invoice_number {invoice.number}")
        self.stdout.write(f"invoice_customer {customer.name}")
        self.stdout.write(f"portal {base}{reverse('billing_portal:home')}")
        self.stdout.write(f"portal_email {customer.email}")
        self.stdout.write(f"portal_sign_in {base}{portal_sign_in_path(customer=customer, now=now)}")
