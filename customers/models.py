from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.contrib.postgres.constraints import ExclusionConstraint
from django.contrib.postgres.fields import DateTimeRangeField, RangeBoundary, RangeOperators
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Func, Q

from core.money import UnknownCurrency, currency_validate

KEY_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
    "Use letters, digits, '.', '_', ':' and '-', starting with a letter or digit.",
)


def validate_currency(value: str) -> None:
    try:
        currency_validate(value)
    except UnknownCurrency as exc:
        raise ValidationError(str(exc)) from exc


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (for example 'Europe/Berlin').")


BILL_TO_PARENT_NEEDS_PARENT = (
    "A customer without a parent cannot be billed to its parent: choose its parent, "
    "or leave bill to parent off."
)


# Rails' names as the products spell them; another rail's key is capitalised.
RAIL_LABELS = {"stripe": "Stripe", "netsuite": "NetSuite", "ach": "ACH", "manual": "Manual"}


def rail_label(key: str) -> str:
    """How people read a rail key: ``netsuite`` -> ``NetSuite``."""
    return RAIL_LABELS.get(key) or key.replace("_", " ").title()


def rail_choices() -> list[tuple[str, str]]:
    return [(key, rail_label(key)) for key in settings.BILLING_RAILS]


class Customer(models.Model):
    """A billing identity. Subsidiaries hang under a parent, in a tree of any depth.

    A subsidiary with ``bill_to_parent`` is billed on its nearest ancestor that is not
    billed to its parent: its billing account. The database refuses a cycle (a trigger,
    see migration 0002).
    """

    key = models.CharField(
        max_length=100,
        unique=True,
        validators=[KEY_VALIDATOR],
        help_text="Stable identifier chosen by you; used in the API, YAML and usage queries.",
    )
    name = models.CharField(max_length=200)
    email = models.EmailField("billing email", blank=True, help_text="Where invoices are sent.")
    address_line1 = models.CharField("address line 1", max_length=200, blank=True)
    address_line2 = models.CharField("address line 2", max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    region = models.CharField("state / region", max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    country = models.CharField(
        max_length=2, blank=True, help_text="ISO 3166-1 alpha-2, e.g. US, DE."
    )
    tax_id = models.CharField(
        "tax id", max_length=50, blank=True, help_text="VAT, EIN or GST number."
    )
    currency = models.CharField(
        max_length=3, default="USD", validators=[validate_currency], help_text="ISO 4217 code."
    )
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="Billing periods start and end at midnight in this time zone.",
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="subsidiaries",
        help_text="The parent company, for a subsidiary.",
    )
    # The default for a subsidiary is on; the services (and the admin's form) apply it,
    # as a column default cannot depend on the parent. A top-level customer is always off.
    bill_to_parent = models.BooleanField(
        default=False,
        help_text="For a subsidiary (on by default): its usage is billed on its parent's "
        "consolidated invoice. A customer without a parent is billed on its own.",
    )
    rail = models.CharField(
        max_length=32,
        choices=rail_choices,
        default="manual",
        help_text="Where this customer's invoices are settled. A subsidiary billed to its parent "
        "uses the parent's rail.",
    )
    rail_settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="Rail details: stripe_customer_id for Stripe; netsuite_entity_id for NetSuite; "
        "routing_number, account_number, account_type, mandate_date for ACH.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(condition=~Q(parent=F("pk")), name="customer_not_own_parent"),
            models.CheckConstraint(
                condition=Q(parent__isnull=False) | Q(bill_to_parent=False),
                name="customer_billed_to_parent_has_parent",
                violation_error_message=BILL_TO_PARENT_NEEDS_PARENT,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.key})"

    def clean(self) -> None:
        # Named on the field (the constraint alone would be a form-wide error).
        if self.bill_to_parent and self.parent_id is None:
            raise ValidationError({"bill_to_parent": BILL_TO_PARENT_NEEDS_PARENT})


# The customer's fields, once, in groups. The API, the admin's form and fieldsets, the
# services and the configuration file each list them in their own order by combining
# these groups; a new field is added to its group here and appears everywhere.
CUSTOMER_NAME_FIELDS = ("key", "name", "email")
CUSTOMER_LOCALE_FIELDS = ("currency", "timezone")
CUSTOMER_TREE_FIELDS = ("parent", "bill_to_parent")
CUSTOMER_ADDRESS_FIELDS = (
    "address_line1",
    "address_line2",
    "city",
    "region",
    "postal_code",
    "country",
    "tax_id",
)
CUSTOMER_RAIL_FIELDS = ("rail", "rail_settings")
CUSTOMER_RECORD_FIELDS = ("created_at", "updated_at")

#: What an operator or an API client writes on a customer (the record is the database's).
CUSTOMER_FIELDS = (
    *CUSTOMER_NAME_FIELDS,
    *CUSTOMER_LOCALE_FIELDS,
    *CUSTOMER_TREE_FIELDS,
    *CUSTOMER_ADDRESS_FIELDS,
    *CUSTOMER_RAIL_FIELDS,
)


class TsTzRange(Func):
    function = "TSTZRANGE"
    output_field = DateTimeRangeField()


class ConsumerMapping(models.Model):
    """A gateway consumer (the event's ``subject``) belongs to a customer over ``[valid_from, valid_to)``.

    At any instant a consumer key belongs to at most one customer: an exclusion constraint
    on (consumer_key, validity range) guarantees it.
    """

    consumer_key = models.CharField(
        max_length=255,
        help_text="What the gateway puts in the event's subject: an API key id, app or consumer id.",
    )
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="consumer_mappings"
    )
    valid_from = models.DateTimeField(help_text="First instant the key belongs to this customer.")
    valid_to = models.DateTimeField(
        null=True, blank=True, help_text="First instant it no longer does; empty means open-ended."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["consumer_key", "valid_from"]
        indexes = [models.Index(fields=["customer", "valid_from"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(valid_to__isnull=True) | Q(valid_to__gt=F("valid_from")),
                name="consumer_mapping_valid_range",
                violation_error_message="valid_to must be after valid_from.",
            ),
            ExclusionConstraint(
                name="consumer_mapping_no_overlap",
                expressions=[
                    ("consumer_key", RangeOperators.EQUAL),
                    (TsTzRange("valid_from", "valid_to", RangeBoundary()), RangeOperators.OVERLAPS),
                ],
                violation_error_message="This consumer key is already mapped for part of that time.",
            ),
        ]

    def __str__(self) -> str:
        until = self.valid_to.isoformat() if self.valid_to else "open"
        return f"{self.consumer_key} → {self.customer.key} [{self.valid_from.isoformat()}, {until})"


class ConsumerMappingChange(models.Model):
    """A record that a consumer key's attribution changed over ``[range_start, range_end)``.

    Written in the same transaction as the mapping change; metering consumes these rows
    (an outbox) to re-attribute usage already rolled up for that key and time range.
    """

    consumer_key = models.CharField(max_length=255)
    range_start = models.DateTimeField()
    range_end = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["id"], name="mapping_change_pending", condition=Q(processed_at__isnull=True)
            )
        ]

    def __str__(self) -> str:
        return f"{self.consumer_key} changed from {self.range_start.isoformat()}"
