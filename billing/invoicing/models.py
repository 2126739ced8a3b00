"""Invoices, their lines, credit notes and the gapless sequences that number them.

An issued invoice is a legal document: its number, lines and amounts never change. The
database enforces it (triggers in migration 0004 refuse changes to an issued invoice's
frozen columns and to its lines), and the models raise ``FrozenInvoiceError`` before
even asking the database.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import F, Q

from customers.models import validate_currency

MONEY = {"max_digits": 19, "decimal_places": 4}
QUANTITY = {"max_digits": 38, "decimal_places": 12}


class FrozenInvoiceError(Exception):
    """Raised on any attempt to change an issued invoice's content or lines."""


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ISSUED = "issued", "Issued"
    PAID = "paid", "Paid"
    PAYMENT_FAILED = "payment_failed", "Payment failed"
    VOID = "void", "Void"
    UNCOLLECTIBLE = "uncollectible", "Uncollectible"


class LineKind(models.TextChoices):
    FLAT_FEE = "flat_fee", "Flat fee"
    USAGE = "usage", "Usage"
    MINIMUM_TRUE_UP = "minimum_true_up", "Minimum commitment true-up"
    CREDIT = "credit", "Credit"
    MANUAL = "manual", "Manual"
    PRIOR_PERIOD_ADJUSTMENT = "prior_period_adjustment", "Prior-period adjustment"


# How lists show invoices (admin, API): drafts first (no number yet; they are the ones
# to review), newest period first; then the issued ones by number, newest first. Numbers
# are gapless, zero-padded and taken in issue order, so their text order is issue order.
INVOICE_ORDERING = (
    F("number").desc(nulls_first=True),
    F("period_start").desc(nulls_last=True),
    "-created_at",
    "-pk",
)
# Credit notes, numbered from their own sequence: by number, newest first.
CREDIT_NOTE_ORDERING = ("-number",)


class DocumentSequence(models.Model):
    """A gapless counter per prefix and year (``INV-2026``); numbers are taken under a
    row lock inside the issuing transaction, so a rolled-back issue returns its number."""

    key = models.CharField(max_length=50, unique=True)
    next_number = models.PositiveBigIntegerField(default=1)

    def __str__(self) -> str:
        return f"{self.key}: next {self.next_number}"


class Invoice(models.Model):
    # Columns that may change after issue: the payment state and its bookkeeping.
    MUTABLE_AFTER_ISSUE = frozenset(
        {
            "status",
            "paid_at",
            "voided_at",
            "void_reason",
            "pdf",
            "pdf_rendered_at",
            "updated_at",
            "settlement_state",
            "amount_paid",
        }
    )

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    number = models.CharField(max_length=40, unique=True, null=True, blank=True)
    status = models.CharField(
        max_length=20, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT
    )
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="invoices"
    )
    currency = models.CharField(max_length=3, validators=[validate_currency])
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    subtotal = models.DecimalField(**MONEY, default=0)
    tax_total = models.DecimalField(**MONEY, default=0)
    total = models.DecimalField(**MONEY, default=0)
    credits_applied = models.DecimalField(**MONEY, default=0)
    amount_due = models.DecimalField(**MONEY, default=0)
    amount_paid = models.DecimalField(**MONEY, default=0)
    tax_exempt_reason = models.CharField(max_length=200, blank=True)
    grace_until = models.DateTimeField(
        null=True, blank=True, help_text="Issued automatically after this."
    )
    issued_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.CharField(max_length=500, blank=True)
    rated_at = models.DateTimeField(null=True, blank=True)
    rated_xmin = models.BigIntegerField(
        default=0, help_text="Usage committed below this transaction id is in the lines."
    )
    pdf = models.FileField(upload_to="invoices/%Y/%m/", blank=True)
    pdf_rendered_at = models.DateTimeField(null=True, blank=True)
    settlement_state = models.CharField(max_length=30, blank=True)
    memo = models.TextField(blank=True, help_text="Printed on the invoice.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "currency", "period_start", "period_end"],
                condition=Q(period_start__isnull=False),
                name="invoice_one_per_account_currency_period",
            ),
            models.CheckConstraint(
                condition=Q(status="draft") | Q(number__isnull=False),
                name="invoice_issued_has_number",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "grace_until"]),
            models.Index(fields=["customer", "period_start"]),
        ]

    def __str__(self) -> str:
        return self.number or f"Draft {str(self.pk)[:8]}"

    def save(self, *args, **kwargs):
        if self.pk and not self._state.adding:
            stored = Invoice.objects.filter(pk=self.pk).values("status").first()
            if stored and stored["status"] != InvoiceStatus.DRAFT:
                fields = kwargs.get("update_fields")
                if fields is None or set(fields) - self.MUTABLE_AFTER_ISSUE:
                    raise FrozenInvoiceError(
                        f"Invoice {self.number} is issued; only its payment state can change "
                        f"(save with update_fields among {sorted(self.MUTABLE_AFTER_ISSUE)})."
                    )
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if Invoice.objects.filter(pk=self.pk).exclude(status=InvoiceStatus.DRAFT).exists():
            raise FrozenInvoiceError(
                f"Invoice {self.number} is issued; void it or credit it instead."
            )
        return super().delete(*args, **kwargs)

    @property
    def is_draft(self) -> bool:
        return self.status == InvoiceStatus.DRAFT


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=30, choices=LineKind.choices)
    description = models.CharField(max_length=500)
    feature = models.ForeignKey(
        "metering.Feature", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    customer = models.ForeignKey(
        "customers.Customer",
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Whose usage this is.",
    )
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    quantity = models.DecimalField(**QUANTITY, null=True, blank=True)
    unit_price = models.DecimalField(max_digits=38, decimal_places=16, null=True, blank=True)
    amount = models.DecimalField(**MONEY)
    unrounded_amount = models.DecimalField(max_digits=50, decimal_places=20)
    group_quantity = models.DecimalField(**QUANTITY, null=True, blank=True)
    group_amount = models.DecimalField(**MONEY, null=True, blank=True)
    tier_breakdown = models.JSONField(default=list, blank=True)
    rate_card = models.ForeignKey(
        "billing.RateCard", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    plan_version = models.ForeignKey(
        "billing.PlanVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    adjusts_invoice = models.ForeignKey(
        Invoice,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="adjustments",
        help_text="For a prior-period adjustment: the issued invoice of the period it corrects.",
    )
    manual = models.BooleanField(
        default=False, help_text="Added by an operator (kept when the draft is recomputed)."
    )
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["invoice", "position", "pk"]

    def __str__(self) -> str:
        return self.description

    def save(self, *args, **kwargs):
        self._refuse_if_frozen()
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        self._refuse_if_frozen()
        return super().delete(*args, **kwargs)

    def _refuse_if_frozen(self) -> None:
        if Invoice.objects.filter(pk=self.invoice_id).exclude(status=InvoiceStatus.DRAFT).exists():
            raise FrozenInvoiceError("The invoice is issued; its lines cannot change.")


class InvoiceTax(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="taxes")
    name = models.CharField(max_length=100)
    percentage = models.DecimalField(max_digits=7, decimal_places=4)
    inclusive = models.BooleanField(default=False)
    base = models.DecimalField(**MONEY)
    amount = models.DecimalField(**MONEY)

    def __str__(self) -> str:
        return f"{self.name}: {self.amount}"


class InvoiceEvent(models.Model):
    """Every state change of an invoice, with who or what made it and why."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField()
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20)
    actor = models.CharField(max_length=150, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["invoice", "at", "pk"]

    def __str__(self) -> str:
        return f"{self.from_status or '·'} → {self.to_status}"


class CreditNote(models.Model):
    """A correction of an issued invoice, numbered from its own gapless sequence."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    number = models.CharField(max_length=40, unique=True)
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=500)
    amount = models.DecimalField(**MONEY)
    issued_at = models.DateTimeField()
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    pdf = models.FileField(upload_to="credit-notes/%Y/%m/", blank=True)
    pdf_rendered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_at"]

    def __str__(self) -> str:
        return self.number


class CreditNoteLine(models.Model):
    credit_note = models.ForeignKey(CreditNote, on_delete=models.CASCADE, related_name="lines")
    invoice_line = models.ForeignKey(
        InvoiceLine, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    description = models.CharField(max_length=500)
    amount = models.DecimalField(**MONEY)

    def __str__(self) -> str:
        return self.description
