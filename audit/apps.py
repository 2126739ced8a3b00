from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AuditConfig(AppConfig):
    """The audit trail of customers, consumer mappings, plans, prices and invoices (with
    django-simple-history; the history tables live in this app, see ``audit.models``),
    its pages in the admin, and the operator roles (``audit.roles``).

    Audit sits above every domain app, like ``config``: it may import any of them, and
    none of them imports it.
    """

    name = "audit"
    verbose_name = "Audit history"

    def ready(self) -> None:
        from audit import signals  # noqa: F401  snapshots the writes that bypass save()
        from audit.roles import roles_sync_after_migrate

        # Groups and custom permissions follow the code after every migrate (and after the
        # test runner's flush); `manage.py roles_sync` does the same by hand. Audit is the
        # last installed app, so every other app's permissions exist by then.
        post_migrate.connect(roles_sync_after_migrate, sender=self)
