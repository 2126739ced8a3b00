from __future__ import annotations

from rest_framework import serializers

from core.api.times import InstantField, InstantModelSerializer
from customers.models import (
    CUSTOMER_ADDRESS_FIELDS,
    CUSTOMER_LOCALE_FIELDS,
    CUSTOMER_NAME_FIELDS,
    CUSTOMER_RAIL_FIELDS,
    CUSTOMER_RECORD_FIELDS,
    CUSTOMER_TREE_FIELDS,
    ConsumerMapping,
    Customer,
    rail_choices,
)
from customers.rail_settings import rail_settings_shown
from customers.selectors import billing_account_ids


class CustomerSerializer(serializers.ModelSerializer):
    """A customer addressed by its key; ``parent`` and ``subsidiaries`` are customer keys.

    ``rail_settings`` are answered with a bank account number masked (``****6789``, the
    ciphertext left out); sending the mask back keeps the stored number."""

    parent = serializers.SlugRelatedField(
        slug_field="key", queryset=Customer.objects.all(), required=False, allow_null=True
    )
    subsidiaries = serializers.SerializerMethodField()
    billing_account = serializers.SerializerMethodField()
    rail = serializers.ChoiceField(choices=[], required=False)

    class Meta:
        model = Customer
        fields = [
            *CUSTOMER_NAME_FIELDS,
            *CUSTOMER_ADDRESS_FIELDS,
            *CUSTOMER_LOCALE_FIELDS,
            *CUSTOMER_TREE_FIELDS,
            "billing_account",
            "subsidiaries",
            *CUSTOMER_RAIL_FIELDS,
            *CUSTOMER_RECORD_FIELDS,
        ]
        read_only_fields = list(CUSTOMER_RECORD_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["rail"].choices = rail_choices()

    def get_subsidiaries(self, obj: Customer) -> list[str]:
        subs = self.context.get("subsidiaries_by_parent")
        if subs is not None:
            return subs.get(obj.pk, [])
        return list(obj.subsidiaries.order_by("key").values_list("key", flat=True))

    def get_billing_account(self, obj: Customer) -> str:
        accounts = self.context.get("billing_account_keys")
        if accounts is not None and obj.pk in accounts:
            return accounts[obj.pk]
        account_id = billing_account_ids(customer_ids=[obj.pk])[obj.pk]
        if account_id == obj.pk:
            return obj.key
        return Customer.objects.values_list("key", flat=True).get(pk=account_id)

    def validate_currency(self, value: str) -> str:
        return value.upper()

    def to_representation(self, instance: Customer) -> dict:
        data = super().to_representation(instance)
        if "rail_settings" in data:
            data["rail_settings"] = rail_settings_shown(data["rail_settings"])
        return data


class CustomerUpdateSerializer(CustomerSerializer):
    class Meta(CustomerSerializer.Meta):
        read_only_fields = ["key", "created_at", "updated_at"]


class ConsumerMappingSerializer(InstantModelSerializer):
    customer = serializers.SlugRelatedField(slug_field="key", queryset=Customer.objects.all())

    class Meta:
        model = ConsumerMapping
        fields = ["id", "consumer_key", "customer", "valid_from", "valid_to", "created_at"]
        read_only_fields = ["id", "created_at"]
        # Overlaps are checked by the service with a message naming the conflicting
        # mapping; the model-level exclusion check would only say "already exists".
        validators: list = []


class ConsumerKeyMoveSerializer(serializers.Serializer):
    customer = serializers.SlugRelatedField(slug_field="key", queryset=Customer.objects.all())
    at = InstantField()


class ConsumerResolveSerializer(serializers.Serializer):
    consumer_key = serializers.CharField()
    time = serializers.DateTimeField()
    customer = serializers.CharField(allow_null=True)
    billing_account = serializers.CharField(allow_null=True)
