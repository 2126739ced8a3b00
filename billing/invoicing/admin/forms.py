"""Forms of the invoice admin's pages, and small helpers they share."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError

from billing.models import Invoice, InvoiceLine, InvoiceStatus
from core.templatetags.numbers import money
from customers.models import Customer
from customers.selectors import billed_customer_ids

UNPAID_ISSUED = (InvoiceStatus.ISSUED, InvoiceStatus.PAYMENT_FAILED, InvoiceStatus.UNCOLLECTIBLE)


def error_messages(exc: ValidationError) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [m for errs in exc.message_dict.values() for m in errs]
    return list(exc.messages)


def form_add_errors(form: forms.Form, exc: ValidationError) -> None:
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for field, errs in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errs)


# ---------------------------------------------------------------- forms


class VoidForm(forms.Form):
    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))


class ManualLineForm(forms.Form):
    description = forms.CharField(max_length=500, help_text="As the customer will read it.")
    amount = forms.DecimalField(
        max_digits=30, decimal_places=12, help_text="Negative for a discount."
    )
    quantity = forms.DecimalField(max_digits=38, decimal_places=12, required=False)
    customer = forms.ModelChoiceField(
        queryset=Customer.objects.none(),
        required=False,
        help_text="Whose line it is: empty for the billing account, or a subsidiary billed on it.",
    )

    def __init__(self, *args, invoice: Invoice, **kwargs):
        super().__init__(*args, **kwargs)
        ids = billed_customer_ids(account=invoice.customer)
        self.fields["customer"].queryset = Customer.objects.filter(pk__in=ids).order_by("key")


class CreditNoteForm(forms.Form):
    WHOLE, LINES, AMOUNT = "whole", "lines", "amount"
    scope = forms.ChoiceField(
        choices=[
            (WHOLE, "Everything left to credit"),
            (LINES, "The lines chosen below, in full"),
            (AMOUNT, "An amount"),
        ],
        initial=WHOLE,
        widget=forms.RadioSelect,
    )
    lines = forms.ModelMultipleChoiceField(
        queryset=InvoiceLine.objects.none(), required=False, widget=forms.CheckboxSelectMultiple
    )
    amount = forms.DecimalField(
        max_digits=19, decimal_places=4, required=False, min_value=Decimal("0.0001")
    )
    reason = forms.CharField(max_length=500, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))

    def __init__(self, *args, invoice: Invoice, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["lines"].queryset = invoice.lines.order_by("position", "pk")
        self.fields["lines"].label_from_instance = lambda line: (
            f"{line.description} ({line.customer.key}): {money(line.amount, invoice.currency)}"
        )

    def clean(self):
        cleaned = super().clean()
        scope = cleaned.get("scope")
        if scope == self.LINES and not cleaned.get("lines"):
            self.add_error("lines", "Choose the lines to credit.")
        if scope == self.AMOUNT and cleaned.get("amount") is None:
            self.add_error("amount", "Give the amount to credit.")
        return cleaned
