"""Settlements: the outbox record of each issued invoice's trip on its rail.

A settlement is created in the transaction that issues its invoice, so an issued invoice
always has one. Its state only moves forward (see ``rails.states``); every attempt, every
request and response (secrets redacted) and every state change is kept.
"""

from __future__ import annotations

from django.db import models

from customers.models import rail_choices, rail_label


class SettlementState(models.TextChoices):
    PENDING = "pending", "Pending"
    SUBMITTING = "submitting", "Submitting"
    SUBMITTED = "submitted", "Submitted"
    COLLECTING = "collecting", "Collecting"
    PAID = "paid", "Paid"
    FAILED = "failed", "Failed"  # whether it is retried: rails.states.state_text
    RETURNED = "returned", "Returned"
    REFUNDED = "refunded", "Refunded"
    VOIDED = "voided", "Voided"
    UNCOLLECTIBLE = "uncollectible", "Uncollectible"
    CANCELLED = "cancelled", "Cancelled by an operator"


class Settlement(models.Model):
    invoice = models.OneToOneField(
        "billing.Invoice", on_delete=models.PROTECT, related_name="settlement"
    )
    rail = models.CharField(
        max_length=32, choices=rail_choices, help_text="The adapter key in BILLING_RAILS."
    )
    state = models.CharField(
        max_length=20, choices=SettlementState.choices, default=SettlementState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    sandbox = models.BooleanField(
        default=False,
        help_text="The rail has no credentials: requests are built and stored, not sent.",
    )
    external_ids = models.JSONField(
        default=dict, blank=True, help_text="Ids on the rail (customer, invoice, ...)."
    )
    last_error = models.TextField(blank=True)
    next_action_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "next_action_at"])]

    def __str__(self) -> str:
        return f"Settlement of {self.invoice.number or self.invoice_id} on {rail_label(self.rail)}"


class SettlementEvent(models.Model):
    """A state change, with why and by whom (worker, webhook, operator)."""

    settlement = models.ForeignKey(Settlement, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField()
    from_state = models.CharField(max_length=20, blank=True)
    to_state = models.CharField(max_length=20)
    actor = models.CharField(max_length=150, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["settlement", "at", "pk"]

    def __str__(self) -> str:
        return f"{self.from_state or '·'} → {self.to_state}"


class SettlementExchange(models.Model):
    """One request to a rail and its response, as sent (or, in sandbox, as it would be)."""

    settlement = models.ForeignKey(Settlement, on_delete=models.CASCADE, related_name="exchanges")
    attempt = models.PositiveIntegerField()
    step = models.CharField(max_length=50)
    idempotency_key = models.CharField(max_length=200, blank=True)
    method = models.CharField(max_length=10, blank=True)
    url = models.CharField(max_length=1000, blank=True)
    request_headers = models.JSONField(default=dict, blank=True)
    request_body = models.TextField(blank=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    error = models.TextField(blank=True)
    sent = models.BooleanField(default=True, help_text="False in sandbox mode: built, never sent.")
    at = models.DateTimeField()

    class Meta:
        ordering = ["settlement", "at", "pk"]

    def __str__(self) -> str:
        return f"{self.step} #{self.attempt}"


class InboundWebhook(models.Model):
    """A webhook from a rail, stored raw before anything else; unique per rail event id."""

    rail = models.CharField(max_length=32)
    event_id = models.CharField(max_length=200)
    event_type = models.CharField(max_length=100, blank=True)
    payload = models.TextField()
    headers = models.JSONField(default=dict)
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["rail", "event_id"], name="inbound_webhook_once")
        ]

    def __str__(self) -> str:
        return f"{self.rail} {self.event_type} {self.event_id}"


class RailItemMapping(models.Model):
    """Which item on a rail (a NetSuite item, say) a feature's lines are booked to.

    A mapping without a feature is the rail's default item for lines of a kind (flat fees,
    manual lines); a mapping without feature and kind is the fallback for everything.
    """

    rail = models.CharField(max_length=32, choices=rail_choices)
    feature = models.ForeignKey(
        "metering.Feature", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    line_kind = models.CharField(
        max_length=30, blank=True, help_text="e.g. flat_fee, manual; empty: any."
    )
    external_item_id = models.CharField(
        max_length=100, help_text="The item's internal id on the rail."
    )
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["rail", "feature", "line_kind"]
        constraints = [
            models.UniqueConstraint(
                fields=["rail", "feature", "line_kind"],
                name="rail_item_mapping_once",
                nulls_distinct=False,
            )
        ]

    def __str__(self) -> str:
        target = self.feature.key if self.feature_id else (self.line_kind or "default")
        return f"{self.rail}: {target} → item {self.external_item_id}"


from rails.models_ach import AchFile, AchFileEntry  # noqa: E402,F401
