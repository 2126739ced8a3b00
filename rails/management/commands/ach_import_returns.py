from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from rails.ach.returns import NachaParseError
from rails.ach.returns_apply import ach_returns_apply


class Command(BaseCommand):
    help = (
        "Apply a bank's NACHA return file: each returned debit fails its invoice. Applying "
        "the same file twice changes nothing the second time."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The return file, as the bank gave it.")

    def handle(self, *args, file, **options):
        path = Path(file)
        try:
            content = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from exc
        try:
            report = ach_returns_apply(
                content=content,
                now=timezone.now(),
                file_name=path.name,
                actor="ach_import_returns command",
            )
        except NachaParseError as exc:
            raise CommandError(f"{path.name} is not a valid NACHA return file: {exc}") from exc
        for line in report.lines():
            self.stdout.write(line)
