"""The operator roles: Django groups with permissions, kept in step with this file.

- **Viewer**: sees everything in the admin (``view_*`` of every model of the billing
  apps) and reads the API in a staff session; changes nothing.
- **Billing operator**: a viewer who reviews drafts (recompute, add a manual line: the
  invoice's ``change`` permission) and retries failed settlements.
- **Billing admin**: everything in customers, metering, billing and rails (customers,
  mappings, meters, features, plans and prices), plus issuing, voiding, credit notes,
  cancelling or marking settlements paid, downloading NACHA files (they hold clear
  account numbers), and writes through the API.

Where Django's add/change/delete/view do not say it, custom permissions do; models'
``Meta`` stays untouched (they belong to their apps), so they are created here, on their
model's content type. ``roles_sync`` makes the three groups hold exactly these
permissions (a permission added by hand to one of them is taken away again; make your
own group for a custom role). It is idempotent and runs after every ``migrate``.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import DEFAULT_DB_ALIAS, transaction

VIEWER, OPERATOR, ADMIN = "Viewer", "Billing operator", "Billing admin"

# (app label, model, codename, name): has_perm("<app label>.<codename>")
CUSTOM_PERMISSIONS = [
    ("billing", "invoice", "issue_invoice", "Can issue draft invoices"),
    ("billing", "invoice", "void_invoice", "Can void issued invoices"),
    ("billing", "creditnote", "create_creditnote", "Can create credit notes"),
    ("rails", "settlement", "retry_settlement", "Can retry failed settlements"),
    # A NACHA file holds customers' account numbers in clear: seeing the file's page
    # (view_achfile, every role) is not downloading it.
    ("rails", "achfile", "download_achfile", "Can download NACHA files (clear account numbers)"),
    ("core", "apikey", "api_read", "Can read through the API when signed in to the admin"),
    ("core", "apikey", "api_write", "Can change through the API when signed in to the admin"),
]

VIEWED_APPS = ("core", "customers", "metering", "billing", "rails")
MANAGED_APPS = ("customers", "metering", "billing", "rails")

ROLE_PERMISSIONS: dict[str, dict] = {
    VIEWER: {"view_apps": VIEWED_APPS, "codenames": ["core.api_read"]},
    OPERATOR: {
        "view_apps": VIEWED_APPS,
        "codenames": ["core.api_read", "billing.change_invoice", "rails.retry_settlement"],
    },
    ADMIN: {
        "view_apps": VIEWED_APPS,
        "manage_apps": MANAGED_APPS,
        "codenames": [
            "core.api_read",
            "core.api_write",
            "billing.issue_invoice",
            "billing.void_invoice",
            "billing.create_creditnote",
            "rails.retry_settlement",
            "rails.download_achfile",
        ],
    },
}


@dataclass(frozen=True)
class RoleSync:
    group: str
    created: bool
    permissions: int
    added: tuple[str, ...]
    removed: tuple[str, ...]


def _label(p: Permission) -> str:
    return f"{p.content_type.app_label}.{p.codename}"


def custom_permissions_ensure() -> None:
    for app_label, model, codename, name in CUSTOM_PERMISSIONS:
        content_type = ContentType.objects.get_for_model(global_apps.get_model(app_label, model))
        Permission.objects.update_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )


def role_permissions(*, role: str) -> list[Permission]:
    """The permissions the role's group should hold."""
    spec = ROLE_PERMISSIONS[role]
    perms = Permission.objects.select_related("content_type")
    chosen = {
        p.pk: p
        for p in perms.filter(
            content_type__app_label__in=spec["view_apps"], codename__startswith="view_"
        )
    }
    for p in perms.filter(content_type__app_label__in=spec.get("manage_apps", ())):
        chosen[p.pk] = p
    for label in spec["codenames"]:
        app_label, codename = label.split(".")
        for p in perms.filter(content_type__app_label=app_label, codename=codename):
            chosen[p.pk] = p
    return sorted(chosen.values(), key=_label)


@transaction.atomic
def roles_sync() -> list[RoleSync]:
    """Create or update the role groups (and the custom permissions they use) so that
    each holds exactly its permissions. Running it again changes nothing."""
    for app_config in global_apps.get_app_configs():
        create_permissions(app_config, verbosity=0)  # models added since the last migrate
    custom_permissions_ensure()
    report = []
    for role in ROLE_PERMISSIONS:
        group, created = Group.objects.get_or_create(name=role)
        wanted = {p.pk: p for p in role_permissions(role=role)}
        held = {p.pk: p for p in group.permissions.select_related("content_type")}
        added = [wanted[pk] for pk in wanted.keys() - held.keys()]
        removed = [held[pk] for pk in held.keys() - wanted.keys()]
        if added:
            group.permissions.add(*added)
        if removed:
            group.permissions.remove(*removed)
        report.append(
            RoleSync(
                group=role,
                created=created,
                permissions=len(wanted),
                added=tuple(sorted(map(_label, added))),
                removed=tuple(sorted(map(_label, removed))),
            )
        )
    return report


def roles_sync_after_migrate(sender, using=DEFAULT_DB_ALIAS, apps=global_apps, **kwargs) -> None:
    """post_migrate: sync the roles once the auth and contenttypes tables exist."""
    if using != DEFAULT_DB_ALIAS:
        return
    try:
        apps.get_model("auth", "Permission")
        apps.get_model("contenttypes", "ContentType")
    except LookupError:  # migrated to a state without them (migrate auth zero)
        return
    roles_sync()
