from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from rails.ach.export import AchExportError, ach_export


class Command(BaseCommand):
    help = (
        "Write the NACHA file of every ACH debit due as of --now (default: the current time) "
        "and print its path; print nothing when none is due. Hand the file to the bank."
    )

    def add_arguments(self, parser):
        parser.add_argument("--now", help="ISO-8601 instant, e.g. 2026-12-02T14:00:00Z.")
        parser.add_argument("--out", help="Where to write the file (default: MEDIA_ROOT/ach/).")

    def handle(self, *args, now=None, out=None, **options):
        instant = timezone.now()
        if now:
            instant = parse_datetime(now)
            if instant is None:
                raise CommandError(f"--now: {now!r} is not an ISO-8601 date-time.")
            if timezone.is_naive(instant):
                raise CommandError("--now: give a time zone, e.g. 2026-12-02T14:00:00Z.")
        try:
            result = ach_export(now=instant, out_path=out, actor="ach_export command")
        except AchExportError as exc:
            raise CommandError(str(exc)) from exc
        if result is None:
            return
        for line in result.skipped:
            self.stderr.write(f"Left out: {line}")
        if result.sandbox:
            self.stderr.write(
                "Sandbox: ACH_ODFI_ROUTING / ACH_COMPANY_ID are not set, so the file names a "
                "placeholder originator. Do not upload it to a bank."
            )
        self.stdout.write(str(result.path))
