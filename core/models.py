from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models


class ApiKeyScope(models.TextChoices):
    INGEST = "ingest", "Ingest usage events"
    READ = "read", "Read configuration, usage and invoices"
    WRITE = "write", "Change configuration"


class ApiKey(models.Model):
    """A machine credential. Only a hash of the secret is stored; the secret is shown once.

    The secret looks like ``ubk_<prefix>_<random>``; the prefix is stored in clear to find
    the row, the whole secret is compared by its SHA-256 digest.
    """

    name = models.CharField(max_length=200, help_text="What uses this key, e.g. 'Kong gateway EU'.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = ArrayField(
        models.CharField(max_length=16, choices=ApiKeyScope.choices),
        default=list,
        help_text="ingest: post usage events. read: read everything. write: change configuration.",
    )
    rate_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests per second this key may make; empty uses the default for the endpoint.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, editable=False
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="A revoked key is refused from then on."
    )

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
