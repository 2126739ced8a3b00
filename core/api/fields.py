"""Decimals in and out of the API as exact strings, never floats: amounts at their
currency's precision (``"49.00"``), quantities and prices exactly, without padding
(``"1500"``, ``"0.00002"``). Numbers sent as JSON floats are refused: a float cannot
carry a price exactly."""

from __future__ import annotations

from django.db import models
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api.times import InstantModelSerializer
from core.money import money_text, plain_decimal

FLOAT_MESSAGE = 'Write the number as a string ("{value}"), so it stays exact.'


class DecimalText(serializers.DecimalField):
    """A decimal field written back as its exact digits without padding (``"500"``, not
    ``"500.000000"``); what it accepts is DRF's ``DecimalField``'s."""

    def to_representation(self, value) -> str | None:
        return plain_decimal(value)


@extend_schema_field(OpenApiTypes.STR)
class ExactDecimalField(DecimalText):
    """A decimal taken from a string (or an integer), never from a float."""

    def to_internal_value(self, data):
        if isinstance(data, bool | float):
            raise serializers.ValidationError(FLOAT_MESSAGE.format(value=data))
        return super().to_internal_value(data)


class DecimalTextModelSerializer(InstantModelSerializer):
    """A model serializer whose model decimals are written without padding."""

    serializer_field_mapping = {
        **InstantModelSerializer.serializer_field_mapping,
        models.DecimalField: DecimalText,
    }


@extend_schema_field(OpenApiTypes.STR)
class PlainDecimalText(serializers.Field):
    """A read-only decimal, exactly and without padding (``"1500"``, ``"0.00002"``)."""

    def __init__(self, **kwargs):
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value) -> str | None:
        return plain_decimal(value)


@extend_schema_field(OpenApiTypes.STR)
class MoneyText(serializers.Field):
    """A read-only amount; a django-money ``Money`` carries its currency, a bare
    ``Decimal`` takes the ``currency`` of the serializer context."""

    def __init__(self, **kwargs):
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def to_representation(self, value) -> str | None:
        if hasattr(value, "currency"):
            return money_text(value.amount, value.currency.code)
        return money_text(value, self.context["currency"])
