from django.core.management.base import BaseCommand, CommandError

from customers.models import Customer
from customers.services import customer_update
from rails.ach.crypto import AchDecryptionError, rotate_text
from rails.models_ach import AchFile


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored bank account number (customers of any rail) and ACH file "
        "under the first secret of "
        "ACH_ENCRYPTION_KEY (or SECRET_KEY). Run it after adding a new secret in front, "
        "before removing the old one."
    )

    def handle(self, *args, **options):
        failed = 0
        customers = 0
        # Every rail's customers: an account number is encrypted whatever the rail.
        with_number = Customer.objects.filter(rail_settings__has_key="account_number_encrypted")
        for customer in with_number.order_by("pk"):
            token = (customer.rail_settings or {}).get("account_number_encrypted")
            if not token:
                continue
            try:
                rotated = rotate_text(token)
            except AchDecryptionError as exc:
                failed += 1
                self.stderr.write(f"Customer {customer.key}: {exc}")
                continue
            customer_update(
                customer=customer,
                rail_settings={**customer.rail_settings, "account_number_encrypted": rotated},
            )
            customers += 1
        files = 0
        for ach_file in AchFile.objects.order_by("pk"):
            try:
                ach_file.content_encrypted = rotate_text(ach_file.content_encrypted)
            except AchDecryptionError as exc:
                failed += 1
                self.stderr.write(f"ACH file {ach_file.file_name}: {exc}")
                continue
            ach_file.save(update_fields=["content_encrypted"])
            files += 1
        self.stdout.write(f"Re-encrypted {customers} customer(s) and {files} ACH file(s).")
        if failed:
            raise CommandError(f"{failed} value(s) could not be decrypted with any configured key.")
