"""Entitlements and grants.

A plan version carries entitlement templates (``PlanVersion.entitlements``, as in the
YAML); an ``EntitlementOverride`` replaces a template for one customer (or adds one);
``Grant`` rows add units on top of a metered entitlement's limit.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class EntitlementType(models.TextChoices):
    METERED = "metered", "Metered (a usage limit)"
    BOOLEAN = "boolean", "Boolean (on or off)"
    STATIC = "static", "Static (a JSON configuration)"


class UsagePeriod(models.TextChoices):
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"
    MONTHLY = "monthly", "Monthly (the billing period)"
    YEARLY = "yearly", "Yearly"


class EntitlementOverride(models.Model):
    """A customer's own entitlement to a feature, in place of its plan's template."""

    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="entitlement_overrides"
    )
    feature = models.ForeignKey("metering.Feature", on_delete=models.PROTECT, related_name="+")
    type = models.CharField(
        max_length=10, choices=EntitlementType.choices, default=EntitlementType.METERED
    )
    limit = models.DecimalField(
        max_digits=30,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Units per usage period (metered).",
    )
    period = models.CharField(
        max_length=10, choices=UsagePeriod.choices, default=UsagePeriod.MONTHLY
    )
    hard = models.BooleanField(
        default=False, help_text="Past the limit, access is refused (soft: only notified)."
    )
    enabled = models.BooleanField(default=True, help_text="Boolean entitlements: access on or off.")
    config = models.JSONField(
        default=dict, blank=True, help_text="Static entitlements: the configuration returned."
    )
    thresholds = models.JSONField(
        default=list,
        blank=True,
        help_text="Notify at these percentages of the limit, e.g. [80, 100].",
    )
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "feature"], name="entitlement_override_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.feature_id} ({self.type})"


class Grant(models.Model):
    """Extra units of a metered feature for a customer, consumed after the limit.

    Grants are used by priority (lower first), then soonest expiry. Without rollover a
    grant's unused units lapse at the end of each usage period it was active in; with
    rollover they carry over until the grant expires.
    """

    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="grants"
    )
    feature = models.ForeignKey("metering.Feature", on_delete=models.PROTECT, related_name="+")
    amount = models.DecimalField(max_digits=30, decimal_places=6)
    priority = models.PositiveSmallIntegerField(
        default=1, help_text="Lower numbers are used first."
    )
    effective_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    rollover = models.BooleanField(
        default=False, help_text="Unused units carry over to the next usage period."
    )
    reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    voided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["customer", "feature", "priority", "expires_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="grant_positive"),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(expires_at__gt=models.F("effective_at")),
                name="grant_expires_after_effective",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount} of {self.feature_id} for {self.customer_id}"
