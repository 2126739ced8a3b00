"""Invoices and credit notes as the API shows them; money always as decimal strings.

Amounts print at their currency's precision (``"49.00"``, ``"5000"`` for JPY); quantities,
unit prices and tier breakdowns print exactly, without padding (``"1500"``, ``"0.00002"``,
``"115.43902"``), as ``core.money`` writes them.
"""

from __future__ import annotations

from decimal import Decimal

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.catalog.api.serializers import breakdown_text
from billing.documents.links import invoice_hosted_url
from billing.invoicing.provenance import PROVABLE_KINDS, bucket_value
from billing.invoicing.receivables import invoice_days_past_due, invoice_is_overdue
from billing.models import CreditNote, CreditNoteLine, Invoice, InvoiceLine, InvoiceTax
from core.api.fields import PlainDecimalText
from core.money import money_text, plain_decimal


@extend_schema_field(OpenApiTypes.STR)
class MoneyField(serializers.Field):
    """A read-only amount in the currency of the object (or of ``currency_source``)."""

    def __init__(self, *, currency_source: str = "currency", **kwargs):
        self.currency_source = currency_source
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def get_attribute(self, instance):
        return instance  # the whole object: the currency lives beside the amount

    def to_representation(self, instance) -> str | None:
        currency = instance
        for part in self.currency_source.split("."):
            currency = getattr(currency, part)
        return self.format(getattr(instance, self.field_name), currency)

    @staticmethod
    def format(value: Decimal | None, currency: str) -> str | None:
        return money_text(value, currency)


class InvoiceLineSerializer(serializers.ModelSerializer):
    kind = serializers.CharField(read_only=True)
    # null where a line has none: a fee or manual line has no feature, a manual line may
    # have no quantity or unit price, a line not shared in a group has no group figures
    feature = serializers.SlugRelatedField(slug_field="key", read_only=True, allow_null=True)
    customer = serializers.SlugRelatedField(
        slug_field="key", read_only=True, help_text="The customer (subsidiary) whose usage it is."
    )
    quantity = PlainDecimalText(allow_null=True)
    unit_price = PlainDecimalText(allow_null=True)
    amount = MoneyField(currency_source="invoice.currency")
    group_quantity = PlainDecimalText(
        allow_null=True,
        help_text="The combined quantity the tiers saw, when the charge is shared.",
    )
    group_amount = MoneyField(currency_source="invoice.currency", allow_null=True)
    adjusts_invoice = serializers.SlugRelatedField(
        slug_field="number",
        read_only=True,
        allow_null=True,
        help_text="The invoice a prior-period adjustment corrects.",
    )
    tier_breakdown = serializers.SerializerMethodField(
        help_text="How the charge was priced: one slice per tier (or the packages), numbers "
        "as exact decimal strings."
    )
    usage_url = serializers.SerializerMethodField()

    class Meta:
        model = InvoiceLine
        fields = [
            "id",
            "kind",
            "description",
            "feature",
            "customer",
            "period_start",
            "period_end",
            "quantity",
            "unit_price",
            "amount",
            "group_quantity",
            "group_amount",
            "tier_breakdown",
            "adjusts_invoice",
            "manual",
            "usage_url",
        ]
        read_only_fields = fields

    @extend_schema_field({"type": "array", "items": {"type": "object"}})
    def get_tier_breakdown(self, line: InvoiceLine) -> list[dict]:
        return breakdown_text(line.tier_breakdown)

    def get_usage_url(self, line: InvoiceLine) -> str | None:
        """Where the buckets behind a usage line are listed (``…/events.csv`` beside it)."""
        if line.kind not in PROVABLE_KINDS or line.feature_id is None:
            return None
        path = f"/api/v1/invoices/{line.invoice_id}/lines/{line.pk}/usage"
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class InvoiceTaxSerializer(serializers.ModelSerializer):
    percentage = PlainDecimalText()
    base = MoneyField(currency_source="invoice.currency")
    amount = MoneyField(currency_source="invoice.currency")

    class Meta:
        model = InvoiceTax
        fields = ["name", "percentage", "inclusive", "base", "amount"]


class CreditNoteLineSerializer(serializers.ModelSerializer):
    amount = MoneyField(currency_source="credit_note.currency")

    class Meta:
        model = CreditNoteLine
        fields = ["invoice_line", "description", "amount"]


class CreditNoteSerializer(serializers.ModelSerializer):
    invoice = serializers.UUIDField(source="invoice_id", read_only=True)
    invoice_number = serializers.CharField(source="invoice.number", read_only=True)
    customer = serializers.CharField(source="invoice.customer.key", read_only=True)
    amount = MoneyField()
    lines = CreditNoteLineSerializer(many=True, read_only=True)
    pdf_url = serializers.SerializerMethodField()

    class Meta:
        model = CreditNote
        fields = [
            "id",
            "number",
            "invoice",
            "invoice_number",
            "customer",
            "currency",
            "reason",
            "amount",
            "issued_at",
            "lines",
            "pdf_url",
        ]
        read_only_fields = fields

    def get_pdf_url(self, note: CreditNote) -> str:
        path = f"/api/v1/credit-notes/{note.pk}/pdf"
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class CreditNoteSummarySerializer(serializers.ModelSerializer):
    amount = MoneyField()

    class Meta:
        model = CreditNote
        fields = ["id", "number", "amount", "reason", "issued_at"]


class InvoiceSerializer(serializers.ModelSerializer):
    """An invoice with its lines. ``customer`` is the billing account's key."""

    customer = serializers.SlugRelatedField(slug_field="key", read_only=True)
    subtotal = MoneyField()
    tax_total = MoneyField()
    total = MoneyField()
    credits_applied = MoneyField()
    amount_due = MoneyField()
    amount_paid = MoneyField()
    hosted_url = serializers.SerializerMethodField(
        help_text="A signed link the customer opens without logging in (none for a draft)."
    )
    pdf_url = serializers.SerializerMethodField()
    lines = InvoiceLineSerializer(many=True, read_only=True)
    taxes = InvoiceTaxSerializer(many=True, read_only=True)
    credit_notes = CreditNoteSummarySerializer(many=True, read_only=True)
    overdue = serializers.SerializerMethodField(
        help_text="Issued, unpaid, a balance left and past its due instant."
    )
    days_past_due = serializers.SerializerMethodField(
        help_text="Started days since the due instant while overdue; 0 otherwise."
    )

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "status",
            "customer",
            "currency",
            "period_start",
            "period_end",
            "subtotal",
            "tax_total",
            "total",
            "credits_applied",
            "amount_due",
            "amount_paid",
            "issued_at",
            "due_at",
            "paid_at",
            "voided_at",
            "void_reason",
            "grace_until",
            "memo",
            "hosted_url",
            "pdf_url",
            "lines",
            "taxes",
            "credit_notes",
            "overdue",
            "days_past_due",
        ]
        read_only_fields = fields

    def get_overdue(self, invoice: Invoice) -> bool:
        return invoice_is_overdue(invoice=invoice, now=self.context["now"])

    def get_days_past_due(self, invoice: Invoice) -> int:
        return invoice_days_past_due(invoice=invoice, now=self.context["now"])

    def get_hosted_url(self, invoice: Invoice) -> str | None:
        if invoice.is_draft:
            return None  # a draft is not the customer's to see; it gets a link when issued
        path = invoice_hosted_url(invoice=invoice, now=self.context["now"])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request and path.startswith("/") else path

    def get_pdf_url(self, invoice: Invoice) -> str:
        path = f"/api/v1/invoices/{invoice.pk}/pdf"
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


# ---------------------------------------------------------------- requests


class InvoiceVoidRequest(serializers.Serializer):
    reason = serializers.CharField(max_length=500, help_text="Why the invoice is voided.")


MAX_LINE_AMOUNT = Decimal("999999999999")


class InvoiceLineAddRequest(serializers.Serializer):
    description = serializers.CharField(max_length=500)
    amount = serializers.DecimalField(
        max_digits=30,
        decimal_places=12,
        # an invoice's amounts hold 15 integer digits (19, 4 decimal places): a line of
        # at most 12 leaves room for the totals of many
        max_value=MAX_LINE_AMOUNT,
        min_value=-MAX_LINE_AMOUNT,
        help_text="A decimal string; rounded to the currency's minor unit.",
    )
    quantity = serializers.DecimalField(
        max_digits=38, decimal_places=12, required=False, allow_null=True
    )
    customer = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="The customer key the line is for: the billing account (default) or a subsidiary billed on it.",
    )


class CreditNoteCreateRequest(serializers.Serializer):
    reason = serializers.CharField(max_length=500)
    amount = serializers.DecimalField(
        max_digits=19,
        decimal_places=4,
        required=False,
        allow_null=True,
        help_text="Credit this amount; omit amount and lines to credit what is left of the invoice.",
    )
    lines = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        allow_empty=False,
        help_text="Credit these lines of the invoice (line ids), in full.",
    )

    def validate(self, attrs):
        if attrs.get("amount") is not None and attrs.get("lines"):
            raise serializers.ValidationError({"amount": ["Give lines or an amount, not both."]})
        return attrs


class BucketSerializer(serializers.Serializer):
    meter = serializers.CharField(source="meter.key")
    subject = serializers.CharField()
    hour = serializers.DateTimeField()
    customer = serializers.CharField(source="customer.key")
    dims = serializers.JSONField()
    event_count = serializers.IntegerField()
    value = serializers.SerializerMethodField()
    value_sum = PlainDecimalText()

    def get_value(self, bucket) -> str | None:
        return plain_decimal(bucket_value(bucket, bucket.meter.aggregation))
