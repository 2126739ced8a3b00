from django.core.management.base import BaseCommand

from audit.roles import roles_sync


class Command(BaseCommand):
    help = (
        "Create or update the operator roles (groups Viewer, Billing operator, Billing admin) "
        "and the custom permissions they use. Idempotent; also runs after every migrate."
    )

    def handle(self, *args, **options):
        for role in roles_sync():
            state = (
                "created"
                if role.created
                else "updated"
                if role.added or role.removed
                else "unchanged"
            )
            self.stdout.write(f"{role.group}: {role.permissions} permissions ({state})")
            for label in role.added:
                self.stdout.write(f"  + {label}")
            for label in role.removed:
                self.stdout.write(f"  - {label}")
