import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from backoffice.configuration import ConfigError, config_apply, document_load


class Command(BaseCommand):
    help = (
        "Make the database match a configuration file (meters, features, plans, webhook "
        "endpoints, notification rules, customers, consumers, subscriptions): create and update, never delete. "
        "One transaction: any error changes nothing. See docs/configuration.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", metavar="FILE.yaml", help="The file to apply ('-': stdin).")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Print the changes an apply would make, and change nothing.",
        )

    def handle(self, *args, file: str, dry_run: bool, **options):
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"{file}: {exc.strerror or exc}") from exc
        try:
            document = document_load(text)
        except ValueError as exc:
            raise CommandError(f"{file}: {exc}") from exc
        try:
            report = config_apply(document=document, dry_run=dry_run)
        except ConfigError as exc:
            for error in exc.errors:
                self.stderr.write(error)
            count = len(exc.errors)
            raise CommandError(
                f"{file}: {count} error{'s' if count != 1 else ''}; nothing was changed."
            ) from exc
        for line in report.lines():
            self.stdout.write(line)
