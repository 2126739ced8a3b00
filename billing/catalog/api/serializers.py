"""The catalog, subscriptions and the upcoming invoice as the API shows and takes them.

Money and quantities travel as decimal strings, never floats: amounts print at their
currency's precision (``"49.00"``), quantities and prices exactly without trailing zeros
(``"1500"``, ``"0.00002"``). Numbers sent as JSON floats are refused: a float cannot
carry a price exactly.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.catalog.periods import period_containing
from billing.models import Cadence, Plan, PlanVersion, RateCard, Subscription, TaxRate
from core.api.fields import ExactDecimalField, MoneyText, PlainDecimalText
from core.api.times import InstantField
from core.money import UnknownCurrency, currency_validate, plain_decimal
from customers.models import KEY_VALIDATOR, Customer
from metering.models import Feature

# ------------------------------------------------------------------------ tax rates


class TaxRateSerializer(serializers.ModelSerializer):
    percentage = ExactDecimalField(max_digits=7, decimal_places=4, min_value=Decimal(0))

    class Meta:
        model = TaxRate
        fields = ["key", "name", "percentage", "inclusive"]


class TaxRateUpdateSerializer(TaxRateSerializer):
    class Meta(TaxRateSerializer.Meta):
        read_only_fields = ["key"]


# ------------------------------------------------------------------------ plans


class RateCardSerializer(serializers.ModelSerializer):
    feature = serializers.SlugRelatedField(
        slug_field="key", read_only=True, allow_null=True, help_text="None for a flat fee."
    )

    class Meta:
        model = RateCard
        fields = ["key", "name", "feature", "price"]
        read_only_fields = fields


class PlanVersionSerializer(serializers.ModelSerializer):
    """One version of a plan; ``customer`` is set on a custom contract."""

    plan = serializers.SlugRelatedField(slug_field="key", read_only=True)
    minimum_commitment = MoneyText()
    customer = serializers.SlugRelatedField(slug_field="key", read_only=True, allow_null=True)
    derived_from = serializers.IntegerField(
        source="derived_from.version", read_only=True, allow_null=True, default=None
    )
    current = serializers.SerializerMethodField(
        help_text="The plan's newest public version: what new subscriptions get."
    )
    subscribers = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        default=None,
        help_text="Subscriptions on this version not yet ended.",
    )
    rate_cards = RateCardSerializer(many=True, read_only=True)
    tax_rates = serializers.SlugRelatedField(slug_field="key", many=True, read_only=True)

    class Meta:
        model = PlanVersion
        fields = [
            "plan",
            "version",
            "currency",
            "cadence",
            "minimum_commitment",
            "customer",
            "derived_from",
            "current",
            "subscribers",
            "rate_cards",
            "tax_rates",
            "entitlements",
            "created_at",
        ]
        read_only_fields = fields

    def get_current(self, version: PlanVersion) -> bool:
        current = self.context.get("current_version_ids")
        if current is None:
            return False
        return version.pk in current


class PlanSerializer(serializers.Serializer):
    """A plan as its current (newest public) version prices it."""

    key = serializers.CharField(source="plan.key")
    name = serializers.CharField(source="plan.name")
    description = serializers.CharField(source="plan.description")
    version = serializers.IntegerField(help_text="The current version's number.")
    currency = serializers.CharField()
    cadence = serializers.CharField()
    minimum_commitment = MoneyText()
    rate_cards = RateCardSerializer(many=True, read_only=True)
    tax_rates = serializers.SerializerMethodField(help_text="Tax rate keys.")
    entitlements = serializers.JSONField()
    versions_url = serializers.SerializerMethodField()

    def get_tax_rates(self, version: PlanVersion) -> list[str]:
        return [rate.key for rate in version.tax_rates.all()]

    def get_versions_url(self, version: PlanVersion) -> str:
        return f"/api/v1/plans/{version.plan.key}/versions"


class PlanSaveResultSerializer(PlanSerializer):
    change = serializers.SerializerMethodField(
        help_text="created, unchanged, updated (the version had no subscribers and changed "
        "in place) or new_version (it had subscribers, who stay on their version)."
    )
    new_version = serializers.SerializerMethodField(
        help_text="Whether this save created a version."
    )

    def get_change(self, version: PlanVersion) -> str:
        return self.context["change"]

    def get_new_version(self, version: PlanVersion) -> bool:
        return self.context["change"] in ("created", "new_version")


class RateCardInput(serializers.Serializer):
    key = serializers.CharField(
        max_length=100,
        required=False,
        validators=[KEY_VALIDATOR],
        help_text="Defaults to the feature's key.",
    )
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    feature = serializers.SlugRelatedField(
        slug_field="key",
        queryset=Feature.objects.all(),
        required=False,
        allow_null=True,
        default=None,
        help_text="The feature key a usage price is on; none for a flat fee.",
    )
    price = serializers.JSONField(
        help_text='The price object, numbers as strings: {"model": "unit", "unit_price": "0.002"}.'
    )

    def validate(self, attrs):
        if not attrs.get("key"):
            if attrs.get("feature") is None:
                raise serializers.ValidationError({"key": ["A flat fee needs a key."]})
            attrs["key"] = attrs["feature"].key
        return attrs


def _currency(value: str) -> str:
    try:
        return currency_validate(value)
    except UnknownCurrency as exc:
        raise serializers.ValidationError(str(exc)) from exc


class PlanInput(serializers.Serializer):
    """A plan's whole configuration. Entitlement templates are not managed here: a save
    keeps those of the current version."""

    key = serializers.CharField(max_length=100, validators=[KEY_VALIDATOR])
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    currency = serializers.CharField(max_length=3)
    cadence = serializers.ChoiceField(choices=Cadence.choices, default=Cadence.MONTHLY)
    minimum_commitment = ExactDecimalField(
        max_digits=19, decimal_places=4, min_value=Decimal(0), default=Decimal(0)
    )
    rate_cards = RateCardInput(many=True, allow_empty=True)

    def validate_currency(self, value: str) -> str:
        return _currency(value)


class PlanUpdateInput(PlanInput):
    key = None  # from the URL


# ------------------------------------------------------------------------ subscriptions


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "properties": {
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
        },
    }
)
class _PeriodField(serializers.Field):
    def __init__(self, **kwargs):
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, period):
        return None if period is None else {"start": period.start, "end": period.end}


class SubscriptionSerializer(serializers.ModelSerializer):
    customer = serializers.SlugRelatedField(slug_field="key", read_only=True)
    plan = serializers.CharField(source="plan_version.plan.key", read_only=True)
    version = serializers.IntegerField(source="plan_version.version", read_only=True)
    custom_contract = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField(help_text="scheduled, active or ended, as of now.")
    current_period = serializers.SerializerMethodField(
        help_text="The billing period holding now, while the subscription is active."
    )

    class Meta:
        model = Subscription
        fields = [
            "id",
            "customer",
            "plan",
            "version",
            "custom_contract",
            "start",
            "end",
            "anchor",
            "status",
            "current_period",
            "created_at",
        ]
        read_only_fields = fields

    def get_custom_contract(self, sub: Subscription) -> bool:
        return sub.plan_version.customer_id is not None

    def get_status(self, sub: Subscription) -> str:
        now = self.context["now"]
        if now < sub.start:
            return "scheduled"
        return "ended" if sub.end is not None and sub.end <= now else "active"

    @extend_schema_field(_PeriodField)
    def get_current_period(self, sub: Subscription):
        if self.get_status(sub) != "active":
            return None
        period = period_containing(
            anchor=sub.anchor,
            cadence=sub.plan_version.cadence,
            timezone=sub.customer.timezone,
            instant=self.context["now"],
        )
        return {"start": period.start, "end": period.end}


class _PlanRefInput(serializers.Serializer):
    plan = serializers.SlugRelatedField(slug_field="key", queryset=Plan.objects.all())
    version = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="A version number of the plan (a custom contract's too); default: the current one.",
    )


class SubscriptionCreateInput(_PlanRefInput):
    customer = serializers.SlugRelatedField(slug_field="key", queryset=Customer.objects.all())
    start = InstantField()
    end = InstantField(required=False, allow_null=True, default=None)


class SubscriptionChangePlanInput(_PlanRefInput):
    at = InstantField(required=False, help_text="Default: now.")
    timing = serializers.ChoiceField(choices=["immediately", "next_period"], default="immediately")


class SubscriptionCancelInput(serializers.Serializer):
    at = InstantField(required=False, help_text="Default: now.")
    timing = serializers.ChoiceField(choices=["immediately", "period_end"], default="period_end")


class CustomContractInput(_PlanRefInput):
    minimum_commitment = ExactDecimalField(
        max_digits=19, decimal_places=4, min_value=Decimal(0), required=False
    )
    prices = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        default=dict,
        help_text="Replacement prices by rate card key; other cards keep the base version's.",
    )
    entitlements = serializers.ListField(child=serializers.JSONField(), required=False)
    at = InstantField(
        required=False,
        help_text="Move the customer's subscription at this instant onto the new version "
        "(omit to only create the version).",
    )
    timing = serializers.ChoiceField(choices=["immediately", "next_period"], default="immediately")


class CustomContractSerializer(PlanVersionSerializer):
    subscription = serializers.SerializerMethodField()

    class Meta(PlanVersionSerializer.Meta):
        fields = [*PlanVersionSerializer.Meta.fields, "subscription"]
        read_only_fields = fields

    @extend_schema_field(SubscriptionSerializer(allow_null=True))
    def get_subscription(self, version: PlanVersion):
        sub = self.context.get("subscription")
        return None if sub is None else SubscriptionSerializer(sub, context=self.context).data


# ------------------------------------------------------------------------ upcoming invoice


class RatedTaxSerializer(serializers.Serializer):
    name = serializers.CharField()
    percentage = PlainDecimalText()
    inclusive = serializers.BooleanField()
    base = MoneyText()
    amount = MoneyText()


def breakdown_text(steps) -> list[dict]:
    """Tier (or package) slices as rating stores them, their numbers written without the
    padding an exact product carries (``"115.43902"``, not ``"115.43902000000000000"``)."""
    return [{key: _breakdown_value(value) for key, value in step.items()} for step in steps or ()]


def _breakdown_value(value):
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, str):
        try:
            return plain_decimal(Decimal(value))
        except (InvalidOperation, ValueError):  # "None": an open-ended tier's top
            return value
    return value


class UpcomingLineSerializer(serializers.Serializer):
    kind = serializers.CharField()
    description = serializers.CharField()
    feature = serializers.SerializerMethodField(help_text="The feature key of a usage line.")
    customer = serializers.SerializerMethodField(
        help_text="The customer (subsidiary) whose usage or fee it is."
    )
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    quantity = PlainDecimalText(allow_null=True)
    unit_price = PlainDecimalText(allow_null=True)
    amount = MoneyText()
    group_quantity = PlainDecimalText(
        allow_null=True, help_text="The combined quantity the tiers saw."
    )
    group_amount = MoneyText(allow_null=True, help_text="The whole charge this line is a share of.")
    tier_breakdown = serializers.SerializerMethodField()

    def get_feature(self, line) -> str | None:
        return self.context["feature_keys"].get(line.feature_id) if line.feature_id else None

    def get_customer(self, line) -> str:
        return self.context["customer_keys"][line.customer_id]

    @extend_schema_field({"type": "array", "items": {"type": "object"}})
    def get_tier_breakdown(self, line) -> list[dict]:
        return breakdown_text(line.breakdown)


class UpcomingInvoiceSerializer(serializers.Serializer):
    """What the billing account would be invoiced for the current period, usage so far."""

    customer = serializers.CharField(source="customer.key", help_text="The customer asked about.")
    billing_account = serializers.CharField(
        source="account.key",
        help_text="The account invoiced: the parent when the customer is billed to it.",
    )
    currency = serializers.CharField(source="rated.currency")
    as_of = serializers.DateTimeField(help_text="Usage is counted up to this instant.")
    period_start = serializers.DateTimeField(source="rated.period.start")
    period_end = serializers.DateTimeField(source="rated.period.end")
    subtotal = MoneyText(source="rated.subtotal")
    taxes = RatedTaxSerializer(source="rated.taxes", many=True)
    tax_exempt_reason = serializers.CharField(source="rated.tax_exempt_reason")
    total = MoneyText(source="rated.total")
    plans = serializers.SerializerMethodField()
    lines = UpcomingLineSerializer(source="rated.lines", many=True)

    @extend_schema_field({"type": "array", "items": {"type": "object"}})
    def get_plans(self, upcoming) -> list[dict]:
        return [
            {"plan": v.plan.key, "version": v.version, "custom_contract": v.customer_id is not None}
            for v in upcoming.plan_versions
        ]


# ------------------------------------------------------------------------ migrations


class PlanMigrationInput(serializers.Serializer):
    to_version = serializers.IntegerField(
        min_value=1, help_text="The version number to move to (of ``to_plan``)."
    )
    to_plan = serializers.SlugRelatedField(
        slug_field="key",
        queryset=Plan.objects.all(),
        required=False,
        help_text="The plan of ``to_version``; default: the plan in the path.",
    )
    subscriptions = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        allow_empty=False,
        max_length=10000,
        help_text="Customer keys of subscribers to move; omitted: every subscriber of the "
        "version that has not ended.",
    )
    effective = serializers.CharField(
        help_text='"next_period" (each subscription at the start of its next period) or an '
        "RFC 3339 instant (the period splits there, flat fees prorated by the second)."
    )
    dry_run = serializers.BooleanField(
        default=False, help_text="Report what would happen and write nothing."
    )

    def validate_effective(self, value: str):
        if value == "next_period":
            return value
        try:
            return InstantField().run_validation(value)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(
                'Write "next_period" or an RFC 3339 instant, e.g. 2026-11-16T00:00:00Z.'
            ) from exc


class MigrationRowSerializer(serializers.Serializer):
    customer = serializers.CharField(source="customer_key")
    subscription = serializers.IntegerField(source="subscription_id", allow_null=True)
    from_version = serializers.CharField()
    to_version = serializers.CharField()
    status = serializers.ChoiceField(choices=["moved", "would_move", "failed"])
    reason = serializers.CharField(help_text="Why it could not move; empty otherwise.")
    effective = serializers.DateTimeField(allow_null=True)
    period = _PeriodField(help_text="The billing period the change falls in.")
    current_total = MoneyText(
        allow_null=True, help_text="That period's invoice total without the change."
    )
    new_total = MoneyText(allow_null=True, help_text="... and with it.")


class MigrationReportSerializer(serializers.Serializer):
    to_version = serializers.SerializerMethodField()
    currency = serializers.CharField(source="to_version.currency")
    dry_run = serializers.BooleanField()
    summary = serializers.CharField()
    moved = serializers.SerializerMethodField()
    failed = serializers.SerializerMethodField()
    results = MigrationRowSerializer(source="rows", many=True)

    def get_to_version(self, report) -> str:
        return str(report.to_version)

    def get_moved(self, report) -> int:
        """Subscriptions moved (or, in a dry run, that would move)."""
        return report.count("would_move" if report.dry_run else "moved")

    def get_failed(self, report) -> int:
        return report.count("failed")
