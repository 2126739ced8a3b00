"""Revocation of a customer's document links and portal sign-ins.

Customer links (the hosted invoice page, its PDF, portal sign-in links) are signed and
carry the instant they were made, so they need no row of their own. Revoking them is
one instant per customer: every link made at or before ``links_valid_after`` stops
working, and so does every portal session that started before it.
"""

from __future__ import annotations

from django.db import models


class CustomerAccess(models.Model):
    customer = models.OneToOneField(
        "customers.Customer", on_delete=models.CASCADE, related_name="document_access"
    )
    links_valid_after = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Links made at or before this instant, and portal sessions started before "
        "it, no longer work. Empty: never revoked.",
    )
    sign_in_links_used_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Portal sign-in links are single-use: the newest one used is recorded "
        "here, and it and every older one stop working.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "customer access"
        verbose_name_plural = "customer access"

    def __str__(self) -> str:
        return f"document access of customer {self.customer_id}"
