"""Forms of billing's admin pages that go through services: a plan's prices (saved by
``plan_save``), and subscribing, moving and cancelling subscriptions."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import ValidationError
from django.db.models import Q

from billing.catalog.services import PlanVersionSpec, RateCardSpec
from billing.models import Cadence, PlanVersion, Subscription
from core.money import UnknownCurrency, currency_validate
from customers.models import KEY_VALIDATOR, Customer
from metering.models import Feature

UTC_HELP = "UTC, e.g. 2026-11-01 00:00:00."


def service_errors_to_form(form: forms.Form, exc: ValidationError) -> None:
    """Put a service's ``ValidationError`` on the form's fields (others on the form)."""
    if not hasattr(exc, "error_dict"):
        for message in exc.messages:
            form.add_error(None, message)
        return
    for field, errors in exc.error_dict.items():
        form.add_error(field if field in form.fields else None, errors)


def price_text(price: dict) -> str:
    """A stored price as the form shows it: one line, or a line per tier."""
    if "tiers" not in price:
        return json.dumps(price)
    head = {k: v for k, v in price.items() if k != "tiers"}
    tiers = ",\n    ".join(json.dumps(t) for t in price["tiers"])
    return json.dumps(head)[:-1] + f', "tiers": [\n    {tiers}\n]}}'


class PriceField(forms.CharField):
    """A price object typed as JSON. Numbers may be written bare or as strings: bare ones
    are read as the text typed (``0.002`` stays exactly ``"0.002"``), never as floats."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 70, "style": "font-family:monospace"})

    def to_python(self, value):
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        try:
            data = json.loads(value, parse_float=str)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
            ) from exc
        if not isinstance(data, dict):
            raise ValidationError('Write an object, e.g. {"model": "unit", "unit_price": "0.002"}.')
        return data

    def prepare_value(self, value):
        return price_text(value) if isinstance(value, dict) else value


class PlanSpecForm(forms.Form):
    key = forms.CharField(max_length=100, validators=[KEY_VALIDATOR])
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    currency = forms.CharField(max_length=3, help_text="ISO 4217, e.g. USD.")
    cadence = forms.ChoiceField(choices=Cadence.choices)
    minimum_commitment = forms.DecimalField(
        max_digits=19,
        decimal_places=4,
        min_value=0,
        initial=0,
        help_text="Per period; when charges come to less, a true-up line adds the difference.",
    )

    def __init__(self, *args, new: bool, **kwargs):
        super().__init__(*args, **kwargs)
        if not new:
            del self.fields["key"]

    def clean_currency(self) -> str:
        try:
            return currency_validate(self.cleaned_data["currency"])
        except UnknownCurrency as exc:
            raise ValidationError(str(exc)) from exc


class RateCardForm(forms.Form):
    key = forms.CharField(
        max_length=100,
        required=False,
        validators=[KEY_VALIDATOR],
        help_text="Default: the feature's key.",
    )
    name = forms.CharField(max_length=200, required=False)
    feature = forms.ModelChoiceField(
        queryset=Feature.objects.order_by("key"),
        required=False,
        to_field_name="key",
        help_text="Empty for a flat fee.",
    )
    price = PriceField()

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("key"):
            if cleaned.get("feature") is None:
                self.add_error("key", "A flat fee needs a key.")
            else:
                cleaned["key"] = cleaned["feature"].key
        return cleaned


RateCardFormSet = forms.formset_factory(RateCardForm, extra=3, can_delete=True)


def rate_card_initial(version: PlanVersion | None) -> list[dict]:
    if version is None:
        return []
    return [
        {
            "key": c.key,
            "name": c.name,
            "feature": c.feature.key if c.feature else None,
            "price": c.price,
        }
        for c in version.rate_cards.select_related("feature").order_by("position", "pk")
    ]


def plan_spec_build(
    *, form: PlanSpecForm, formset, entitlements: tuple
) -> tuple[PlanVersionSpec, list[forms.Form]]:
    """The spec the forms describe, and the card forms in the spec's order (so an error
    about ``rate_cards[i]`` lands on the right row)."""
    card_forms = [
        f for f in formset.forms if f.cleaned_data and not f.cleaned_data.get("DELETE", False)
    ]
    spec = PlanVersionSpec(
        currency=form.cleaned_data["currency"],
        cadence=form.cleaned_data["cadence"],
        minimum_commitment=form.cleaned_data["minimum_commitment"],
        rate_cards=tuple(
            RateCardSpec(
                key=f.cleaned_data["key"],
                name=f.cleaned_data["name"],
                feature=f.cleaned_data["feature"],
                price=f.cleaned_data["price"],
            )
            for f in card_forms
        ),
        entitlements=entitlements,
    )
    return spec, card_forms


def plan_spec_errors(
    *, exc: ValidationError, form: PlanSpecForm, card_forms: list[forms.Form]
) -> None:
    """File ``plan_save``'s errors: ``rate_cards[2].price.tiers[0].up_to: ...`` on row 3's
    price, with its path inside the price kept in the message."""
    if hasattr(exc, "error_dict"):
        service_errors_to_form(form, exc)
        return
    for message in exc.messages:
        path, _, text = message.partition(": ")
        if path.startswith("rate_cards[") and "]" in path:
            index = int(path[len("rate_cards[") : path.index("]")])
            rest = path[path.index("]") + 2 :]  # after "]."
            field = rest.split(".", 1)[0] if rest else None
            if index < len(card_forms) and field in ("key", "feature", "price"):
                inside = rest[len(field) + 1 :]
                card_forms[index].add_error(field, f"{inside}: {text}" if inside else text)
                continue
        form.add_error(None, message)


# ------------------------------------------------------------------------ subscriptions


def _datetime_field(label: str, **kwargs: Any) -> forms.DateTimeField:
    return forms.DateTimeField(label=label, help_text=UTC_HELP, **kwargs)


class SubscribeForm(forms.Form):
    customer = forms.ModelChoiceField(
        queryset=Customer.objects.all(),
        widget=AutocompleteSelect(Subscription._meta.get_field("customer"), admin.site),
        help_text="A billing account (a subsidiary billed to its parent is billed on the parent's subscription).",
    )
    plan_version = forms.ModelChoiceField(
        queryset=PlanVersion.objects.select_related("plan", "customer").order_by(
            "plan__key", "version"
        ),
        label="Plan version",
    )
    start = _datetime_field("Start")
    end = _datetime_field("End", required=False)


class ChangePlanForm(forms.Form):
    plan_version = forms.ModelChoiceField(
        queryset=PlanVersion.objects.none(), label="New plan version"
    )
    at = _datetime_field("At")
    timing = forms.ChoiceField(
        choices=[
            ("immediately", "Immediately: split the period at that instant"),
            ("next_period", "Next period: from the end of the period holding that instant"),
        ]
    )

    def __init__(self, *args, subscription: Subscription, **kwargs):
        super().__init__(*args, **kwargs)
        customer = subscription.customer
        self.fields["plan_version"].queryset = (
            PlanVersion.objects.select_related("plan", "customer")
            .filter(currency=customer.currency)
            .filter(Q(customer__isnull=True) | Q(customer=customer))
            .exclude(pk=subscription.plan_version_id)
            .order_by("plan__key", "version")
        )


class CancelForm(forms.Form):
    at = _datetime_field("At")
    timing = forms.ChoiceField(
        choices=[
            ("period_end", "At the end of the period holding that instant"),
            ("immediately", "Immediately, at that instant"),
        ]
    )


class MigrateForm(forms.Form):
    to_version = forms.ModelChoiceField(
        queryset=PlanVersion.objects.select_related("plan", "customer").order_by(
            "plan__key", "version"
        ),
        label="New plan version",
    )
    timing = forms.ChoiceField(
        choices=[
            ("next_period", "Next period: each subscription at the start of its next period"),
            ("immediately", "At an instant: split each period there (fees prorated)"),
        ]
    )
    at = _datetime_field("At", required=False)

    def clean(self):
        data = super().clean()
        if data.get("timing") == "immediately" and not data.get("at"):
            self.add_error("at", "Give the instant the subscriptions move at.")
        return data
