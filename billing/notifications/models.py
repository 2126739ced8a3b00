"""Notifications: rules that say what to watch, an outbox of events, and their delivery
to webhook endpoints (signed per Standard Webhooks) with a log of every attempt.

``NotificationEvent.dedupe_key`` is unique: an event is inserted with ``ON CONFLICT DO
NOTHING``, so however many workers notice the same threshold crossing at once, one event
exists, and one ``WebhookDelivery`` per endpoint (unique on event and endpoint).
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from customers.models import KEY_VALIDATOR


class RuleKind(models.TextChoices):
    ENTITLEMENT_THRESHOLD = "entitlement_threshold", "Entitlement threshold"
    SPEND_THRESHOLD = "spend_threshold", "Spend threshold"


class EventType(models.TextChoices):
    ENTITLEMENT_THRESHOLD = "entitlement.threshold", "entitlement.threshold"
    SPEND_THRESHOLD = "spend.threshold", "spend.threshold"
    INVOICE_ISSUED = "invoice.issued", "invoice.issued"
    INVOICE_PAID = "invoice.paid", "invoice.paid"
    INVOICE_PAYMENT_FAILED = "invoice.payment_failed", "invoice.payment_failed"
    SETTLEMENT_FAILED = "settlement.failed", "settlement.failed"


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (will retry)"
    GIVEN_UP = "given_up", "Given up"


class NotificationRule(models.Model):
    """Thresholds to watch, and the endpoints told when one is crossed.

    Entitlement thresholds: ``[{"percent": 80}, {"usage": 1000}]`` (percent of the
    entitlement's allowance, or absolute usage in the usage period). Spend thresholds:
    ``[{"amount": "500.00"}]`` in the account's currency, on the upcoming invoice's total.
    """

    key = models.CharField(max_length=100, unique=True, validators=[KEY_VALIDATOR])
    kind = models.CharField(max_length=30, choices=RuleKind.choices)
    feature = models.ForeignKey(
        "metering.Feature",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Entitlement thresholds: the feature watched; empty: every metered entitlement.",
    )
    customer = models.ForeignKey(
        "customers.Customer",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notification_rules",
        help_text="A billing account; empty: every customer.",
    )
    thresholds = models.JSONField(
        default=list,
        help_text='e.g. [{"percent": 80}, {"usage": 1000}] for entitlements, [{"amount": "500.00"}] for spend.',
    )
    endpoints = models.ManyToManyField(
        "billing.WebhookEndpoint",
        blank=True,
        related_name="notification_rules",
        help_text="Told of this rule's crossings (besides endpoints subscribed to the event type).",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="entitlement_threshold") | Q(feature__isnull=True),
                name="notification_rule_spend_has_no_feature",
            )
        ]

    def __str__(self) -> str:
        return self.key


class NotificationEvent(models.Model):
    """The outbox: one row per thing that happened, whatever the number of endpoints."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=50, choices=EventType.choices)
    payload = models.JSONField(help_text='The body sent: {"type", "timestamp", "data"}.')
    dedupe_key = models.CharField(max_length=300, unique=True)
    customer = models.ForeignKey(
        "customers.Customer", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["type", "created_at"])]

    def __str__(self) -> str:
        return f"{self.type} {str(self.pk)[:8]}"


class WebhookDelivery(models.Model):
    """One event to one endpoint: retried with backoff until delivered or given up."""

    event = models.ForeignKey(
        NotificationEvent, on_delete=models.CASCADE, related_name="deliveries"
    )
    endpoint = models.ForeignKey(
        "billing.WebhookEndpoint", on_delete=models.PROTECT, related_name="deliveries"
    )
    state = models.CharField(
        max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(
        default=0, help_text="Attempts in the current round (a redeliver starts a new one)."
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    response_body = models.TextField(
        blank=True,
        help_text="The first 200 characters of the last response (a receiver's page is not "
        "the product's to keep).",
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="webhook_delivery_once")
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event.type} → {self.endpoint.key}"


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery, and what came back."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    at = models.DateTimeField()
    status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="HTTP status; empty: no answer."
    )
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "at", "pk"]

    def __str__(self) -> str:
        return f"{self.status or 'no answer'} at {self.at:%Y-%m-%d %H:%M:%S}"


class NotificationCursor(models.Model):
    """How far a check has read: usage committed in transactions below ``xid`` was seen."""

    name = models.CharField(max_length=50, unique=True)
    xid = models.BigIntegerField(default=0)
    checked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.xid}"
