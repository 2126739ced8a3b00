import os

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from metering.gateways.consumers import (
    DEFAULT_TOKEN_HEADER,
    PAGE_SIZE,
    KongAdminError,
    kong_consumers_import,
)


class Command(BaseCommand):
    help = (
        "Import the consumers of a Kong Admin API (GET /consumers, every page) as consumer "
        "keys to link to customers. Creates and updates, never deletes; safe to re-run."
    )

    def add_arguments(self, parser):
        parser.add_argument("url", help="The Admin API's base URL, e.g. http://kong-admin:8001.")
        parser.add_argument(
            "--token",
            default=None,
            help="The admin token (default: the KONG_ADMIN_TOKEN environment variable; "
            "none when unset).",
        )
        parser.add_argument(
            "--token-header",
            default=DEFAULT_TOKEN_HEADER,
            help=f"The header that carries the token (default {DEFAULT_TOKEN_HEADER}).",
        )

        parser.add_argument(
            "--page-size",
            type=int,
            choices=range(1, PAGE_SIZE + 1),
            metavar=f"1..{PAGE_SIZE}",
            default=PAGE_SIZE,
            help=f"Consumers per page (default and Kong's largest: {PAGE_SIZE}).",
        )

    def handle(
        self,
        *args,
        url: str,
        token: str | None,
        token_header: str,
        page_size: int,
        **options,
    ):
        if token is None:
            token = os.environ.get("KONG_ADMIN_TOKEN", "")
        try:
            result = kong_consumers_import(
                admin_url=url,
                token=token,
                token_header=token_header,
                page_size=page_size,
                now=timezone.now(),
            )
        except KongAdminError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Kong consumers: {result.summary()}.")
        for label, keys in (("created", result.created), ("updated", result.updated)):
            for key in keys:
                self.stdout.write(f"  {label}: {key}")
        for skip in result.skipped:
            self.stdout.write(f"  skipped {skip.kong_id or '(no id)'}: {skip.reason}")
