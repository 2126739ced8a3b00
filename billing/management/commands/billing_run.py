from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing.run import billing_run


class Command(BaseCommand):
    help = (
        "Do, as of --now (default: the current time), everything the beat schedule would have "
        "done by then: roll up usage, close ended periods into drafts, issue drafts past their "
        "grace period, render PDFs, and create and drive settlements."
    )

    def add_arguments(self, parser):
        parser.add_argument("--now", help="ISO-8601 instant, e.g. 2026-12-02T00:00:00Z.")

    def handle(self, *args, now=None, **options):
        instant = timezone.now()
        if now:
            instant = parse_datetime(now)
            if instant is None:
                raise CommandError(f"--now: {now!r} is not an ISO-8601 date-time.")
            if timezone.is_naive(instant):
                raise CommandError("--now: give a time zone, e.g. 2026-12-02T00:00:00Z.")
        for line in billing_run(now=instant).report_lines():
            self.stdout.write(line)
