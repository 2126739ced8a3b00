from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from config.embedded import VAR_DIR
from core.models import ApiKey
from core.services import api_key_create

DEMO_KEY_NAME = "demo gateway"


class Command(BaseCommand):
    help = (
        "Create (or reset) the demo's admin user and API key and print them on one line: "
        "USERNAME PASSWORD API_KEY. Both are kept under var/ so a restart shows the same ones."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options):
        var = VAR_DIR  # var/, or BILLING_VAR_DIR: another instance keeps its own
        var.mkdir(parents=True, exist_ok=True)
        password = os.environ.get("DEMO_ADMIN_PASSWORD") or self._read(var / "demo-admin-password")
        password = password or secrets.token_urlsafe(12)
        self._write(var / "demo-admin-password", password)
        user, _ = get_user_model().objects.get_or_create(
            username=username, defaults={"email": "admin@example.com"}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()

        secret = self._read(var / "demo-api-key")
        prefix = secret.split("_")[1] if secret.count("_") >= 2 else ""
        if not ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).exists():
            secret = api_key_create(name=DEMO_KEY_NAME, scopes=["ingest", "read", "write"]).secret
            self._write(var / "demo-api-key", secret)
        self.stdout.write(f"{username} {password} {secret}")

    @staticmethod
    def _read(path) -> str:
        return path.read_text().strip() if path.exists() else ""

    @staticmethod
    def _write(path, value: str) -> None:
        path.write_text(value)
        path.chmod(0o600)
