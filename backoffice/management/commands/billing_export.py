from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from backoffice.configuration import config_export, document_dump


class Command(BaseCommand):
    help = (
        "Write the current configuration in the format billing_apply reads (standard "
        "output by default). Webhook signing secrets are written as references to "
        "environment variables (secret: {env: WEBHOOK_SECRET_<KEY>}), never in clear; "
        "rail settings are written as stored (a bank account number encrypted, whatever the "
        "rail; never in clear): keep the file as safe as the database."
    )

    def add_arguments(self, parser):
        parser.add_argument("--out", metavar="FILE", help="Write to FILE instead of stdout.")

    def handle(self, *args, out: str | None = None, **options):
        text = document_dump(config_export())
        if not out:
            self.stdout.write(text, ending="")
            return
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"{out}: {exc.strerror or exc}") from exc
        self.stderr.write(f"Wrote {out}")
