from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from metering.meter_templates import TEMPLATES, UnknownTemplate, template_apply


class Command(BaseCommand):
    help = (
        "Create the meters and features of one-click templates (all of them when no name is "
        "given). Existing keys are left alone; prints each key it created."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "names",
            nargs="*",
            metavar="NAME",
            help=f"Template names: {', '.join(t.name for t in TEMPLATES)}.",
        )
        parser.add_argument(
            "--list",
            dest="list_only",
            action="store_true",
            help="List the templates and apply nothing.",
        )

    def handle(self, *args, names: list[str], list_only: bool, **options):
        if list_only:
            for template in TEMPLATES:
                self.stdout.write(f"{template.name}\t{template.title}: {template.description}")
            return
        for name in names or [t.name for t in TEMPLATES]:
            try:
                created = template_apply(name=name)
            except UnknownTemplate as exc:
                raise CommandError(str(exc)) from exc
            except ValidationError as exc:
                raise CommandError(f"{name}: {'; '.join(exc.messages)}") from exc
            if created:
                for key in created:
                    self.stdout.write(f"{name}: created {key}")
            else:
                self.stdout.write(f"{name}: nothing to create")
