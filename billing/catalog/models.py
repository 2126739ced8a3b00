from __future__ import annotations

from django.contrib.postgres.constraints import ExclusionConstraint
from django.contrib.postgres.fields import RangeBoundary, RangeOperators
from django.db import models
from django.db.models import F, Q
from djmoney.models.fields import MoneyField

from core.outbound import PublicUrlValidator
from customers.models import KEY_VALIDATOR, TsTzRange, validate_currency


class Cadence(models.TextChoices):
    MONTHLY = "monthly", "Monthly"
    YEARLY = "yearly", "Yearly"


class TaxRate(models.Model):
    """A tax applied to the subtotal of an invoice, rounded once per rate on the sum."""

    key = models.CharField(max_length=100, unique=True, validators=[KEY_VALIDATOR])
    name = models.CharField(max_length=100, help_text="As printed on the invoice, e.g. 'VAT 19%'.")
    percentage = models.DecimalField(max_digits=7, decimal_places=4)
    inclusive = models.BooleanField(
        default=False, help_text="Prices already include this tax (it is shown, not added)."
    )

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.name} ({self.percentage}%{' incl.' if self.inclusive else ''})"


class Plan(models.Model):
    """A named plan. Its prices live on versions: editing a plan that has subscribers
    makes a new version, and each subscription stays on its version until moved."""

    key = models.CharField(max_length=100, unique=True, validators=[KEY_VALIDATOR])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name


class PlanVersion(models.Model):
    """One version of a plan's currency, cadence, prices and commitment.

    A version with a ``customer`` is a custom contract: derived from a public version, it
    applies only to that customer and leaves every other subscriber untouched.
    """

    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, validators=[validate_currency])
    cadence = models.CharField(max_length=10, choices=Cadence.choices, default=Cadence.MONTHLY)
    minimum_commitment = MoneyField(
        max_digits=19,
        decimal_places=4,
        default_currency="USD",
        default=0,
        help_text="Per period: when flat and usage charges come to less, a true-up line adds the difference.",
    )
    customer = models.ForeignKey(
        "customers.Customer",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="custom_plan_versions",
        help_text="Set for a custom contract: this version is that customer's alone.",
    )
    derived_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="derived_versions"
    )
    tax_rates = models.ManyToManyField(TaxRate, blank=True, related_name="plan_versions")
    entitlements = models.JSONField(
        default=list, blank=True, help_text="Entitlement templates for subscribers (see docs)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["plan", "version"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "version"], name="plan_version_number"),
        ]

    def __str__(self) -> str:
        suffix = f" for {self.customer.key}" if self.customer_id else ""
        return f"{self.plan.key} v{self.version}{suffix}"


class RateCard(models.Model):
    """One price in a plan version: a flat fee, or a usage price on a feature.

    ``price`` holds the price exactly as configured (decimal strings), e.g.
    ``{"model": "graduated", "tiers": [{"up_to": 1000, "unit_price": "0.01"}, ...]}``;
    billing.catalog.prices turns it into the pricing engine's frozen dataclasses.
    """

    plan_version = models.ForeignKey(
        PlanVersion, on_delete=models.CASCADE, related_name="rate_cards"
    )
    key = models.CharField(max_length=100, validators=[KEY_VALIDATOR])
    name = models.CharField(max_length=200, blank=True, help_text="As printed on the invoice.")
    feature = models.ForeignKey(
        "metering.Feature",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="rate_cards",
    )
    price = models.JSONField(help_text="The price model and its parameters; see docs/pricing.md.")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["plan_version", "position", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["plan_version", "key"], name="rate_card_key"),
            models.UniqueConstraint(
                fields=["plan_version", "feature"],
                condition=Q(feature__isnull=False),
                name="rate_card_feature_once",
                violation_error_message="A feature is priced at most once per plan.",
            ),
        ]

    def __str__(self) -> str:
        return self.name or self.key

    @property
    def is_flat(self) -> bool:
        return self.price.get("model") == "flat"


class BillingProfile(models.Model):
    """Billing settings of a customer: tax, grace period and payment terms."""

    customer = models.OneToOneField(
        "customers.Customer", on_delete=models.CASCADE, related_name="billing_profile"
    )
    tax_rates = models.ManyToManyField(
        TaxRate,
        blank=True,
        related_name="customers",
        help_text="Taxes for this customer (in place of the plan's).",
    )
    tax_exempt = models.BooleanField(default=False)
    tax_exempt_reason = models.CharField(max_length=200, blank=True)
    grace_period_hours = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Hours a draft waits for late usage before it is issued; empty: the default.",
    )
    net_terms_days = models.PositiveIntegerField(
        default=30, help_text="Days from issue to due date."
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(tax_exempt=False) | ~Q(tax_exempt_reason=""),
                name="tax_exempt_needs_reason",
                violation_error_message="Say why the customer is exempt from tax.",
            )
        ]

    def __str__(self) -> str:
        return f"billing profile of {self.customer_id}"


class Subscription(models.Model):
    """A billing account on a plan version over ``[start, end)``.

    Periods are anchored on ``anchor`` (the first subscription's start; a plan change
    keeps it, so periods do not shift). An account has one subscription at any instant:
    a plan change ends one and starts the next at the same instant.
    """

    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="subscriptions"
    )
    plan_version = models.ForeignKey(
        PlanVersion, on_delete=models.PROTECT, related_name="subscriptions"
    )
    start = models.DateTimeField()
    end = models.DateTimeField(null=True, blank=True, help_text="Empty: until cancelled.")
    anchor = models.DateTimeField(help_text="Billing periods are counted from this instant.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["customer", "start"]
        constraints = [
            models.CheckConstraint(
                condition=Q(end__isnull=True) | Q(end__gt=F("start")),
                name="subscription_valid_range",
            ),
            ExclusionConstraint(
                name="subscription_no_overlap",
                expressions=[
                    ("customer", RangeOperators.EQUAL),
                    (TsTzRange("start", "end", RangeBoundary()), RangeOperators.OVERLAPS),
                ],
                violation_error_message="The customer already has a subscription for part of that time.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} on {self.plan_version} from {self.start.isoformat()}"


class WebhookEndpoint(models.Model):
    """Where notifications are delivered, signed per Standard Webhooks."""

    key = models.CharField(max_length=100, unique=True, validators=[KEY_VALIDATOR])
    # Never this machine, a private network or a metadata service: checked here when
    # saved, and again on the resolved addresses when sending (core.outbound).
    url = models.URLField(
        max_length=500,
        validators=[PublicUrlValidator("NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE")],
        help_text="A public http(s) URL. Private addresses need "
        "NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE=true.",
    )
    secret = models.CharField(
        max_length=200,
        help_text="The signing secret (whsec_...); receivers verify signatures with it.",
    )
    events = models.JSONField(
        default=list,
        help_text="Event types sent here, e.g. entitlement.threshold, invoice.issued, invoice.paid, "
        "invoice.payment_failed, settlement.failed.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key
