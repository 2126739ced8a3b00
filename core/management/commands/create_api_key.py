from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key and print its secret (only the secret) on standard output."

    def add_arguments(self, parser):
        parser.add_argument("name", help="What uses the key, e.g. 'kong-eu'.")
        parser.add_argument(
            "--scopes", default="read", help="Comma-separated: ingest,read,write (default: read)."
        )

    def handle(self, *args, name: str, scopes: str, **options):
        try:
            issued = api_key_create(name=name, scopes=scopes.split(","))
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            ) from exc
        self.stdout.write(issued.secret)
