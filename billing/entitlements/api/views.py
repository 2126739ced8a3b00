"""Entitlement value checks (OpenMeter's shape), overrides and grants."""

from __future__ import annotations

from django.db import InterfaceError, OperationalError, connection
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.entitlements.context import EntitlementNotFound
from billing.entitlements.grants import grant_void
from billing.entitlements.specs import entitlements_of
from billing.entitlements.value import entitlement_value, entitlement_value_for_key
from billing.models import EntitlementOverride, Grant
from core.api.fields import DecimalTextModelSerializer
from core.api.renderers import ExactNumberJSONRenderer
from core.api.times import instant_parse
from customers.models import Customer
from customers.selectors import customer_billing_account
from metering.models import Feature

MAX_BULK_CHECKS = 1000


@extend_schema_field({"type": "number"})
class ExactNumber(serializers.Field):
    """For the schema: a decimal the view writes as an exact JSON number (OpenMeter's
    shape, see ``ExactNumberJSONRenderer``), not as the API's usual decimal string."""


def _instant(raw: str | None, field: str = "time"):
    if not raw:
        return timezone.now()
    try:
        return instant_parse(raw)
    except ValueError as exc:
        raise ValidationError({field: [str(exc)]}) from exc


def _value_body(customer_key: str, feature_key: str, at) -> dict:
    try:
        try:
            value = entitlement_value_for_key(
                customer_key=customer_key, feature_key=feature_key, at=at
            )
        except (OperationalError, InterfaceError):
            # Connections persist without a health check per request (see
            # DATABASES in the settings): after PostgreSQL restarted, the first use
            # of an old one fails. A check only reads, so it is asked again once on
            # a new connection rather than failing the gateway's request.
            if connection.in_atomic_block or connection.is_usable():
                raise
            connection.close()
            value = entitlement_value_for_key(
                customer_key=customer_key, feature_key=feature_key, at=at
            )
    except EntitlementNotFound as exc:
        raise NotFound(str(exc)) from exc
    if value is None:
        # no entitlement: OpenMeter answers no access rather than an error
        return {"hasAccess": False, "balance": 0, "usage": 0, "overage": 0}
    return value.as_openmeter()


class EntitlementValueView(APIView):
    """`{hasAccess, balance, usage, overage}` of a customer's entitlement to a feature,
    now or at `time`. Usage includes events accepted a moment ago."""

    renderer_classes = [ExactNumberJSONRenderer]
    required_scope = "read"

    @extend_schema(
        parameters=[OpenApiParameter("time", OpenApiTypes.DATETIME, description="Default: now.")],
        responses=inline_serializer(
            "EntitlementValue",
            {
                "hasAccess": serializers.BooleanField(),
                "balance": ExactNumber(
                    required=False,
                    allow_null=True,
                    help_text="Units left this usage period (metered; null: no limit).",
                ),
                "usage": ExactNumber(required=False, help_text="Units used (metered)."),
                "overage": ExactNumber(
                    required=False, help_text="Units used past the limit (metered)."
                ),
                "config": serializers.JSONField(required=False, help_text="Static only."),
            },
        ),
    )
    def get(self, request, key: str, feature: str):
        return Response(_value_body(key, feature, _instant(request.query_params.get("time"))))


class EntitlementBulkCheckView(APIView):
    """Many value checks in one call: `{"checks": [{"customer", "feature", "time"?}]}`."""

    renderer_classes = [ExactNumberJSONRenderer]
    required_scope = "read"

    @extend_schema(request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT)
    def post(self, request):
        checks = request.data.get("checks") if isinstance(request.data, dict) else None
        if not isinstance(checks, list) or not checks:
            raise ValidationError(
                {"checks": ["Give a non-empty list of {customer, feature, time?}."]}
            )
        if len(checks) > MAX_BULK_CHECKS:
            raise ValidationError({"checks": [f"At most {MAX_BULK_CHECKS} checks per call."]})
        results = []
        for i, check in enumerate(checks):
            if not isinstance(check, dict) or not check.get("customer") or not check.get("feature"):
                raise ValidationError({"checks": [f"checks[{i}]: needs customer and feature."]})
            at = _instant(check.get("time"), field=f"checks[{i}].time")
            try:
                body = _value_body(check["customer"], check["feature"], at)
            except NotFound as exc:
                body = {"error": str(exc.detail)}
            results.append({"customer": check["customer"], "feature": check["feature"], **body})
        return Response({"results": results})


class CustomerEntitlementsView(APIView):
    """Every entitlement of a customer's billing account, with its value now."""

    renderer_classes = [ExactNumberJSONRenderer]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, key: str):
        account = customer_billing_account(customer=get_object_or_404(Customer, key=key))
        at = _instant(request.query_params.get("time"))
        data = []
        for feature, spec in entitlements_of(account=account, at=at):
            value = entitlement_value(account=account, feature=feature, at=at)
            data.append(
                {
                    "feature": feature.key,
                    "type": spec.type,
                    "source": spec.source,
                    "limit": spec.limit,
                    "period": spec.period,
                    "hard": spec.hard,
                    "thresholds": list(spec.thresholds),
                    **(value.as_openmeter() if value else {}),
                    **(
                        {"periodStart": value.period.start, "periodEnd": value.period.end}
                        if value and value.period
                        else {}
                    ),
                }
            )
        return Response({"customer": key, "billingAccount": account.key, "entitlements": data})


class OverrideSerializer(DecimalTextModelSerializer):
    feature = serializers.SlugRelatedField(slug_field="key", queryset=Feature.objects.all())

    class Meta:
        model = EntitlementOverride
        fields = [
            "feature",
            "type",
            "limit",
            "period",
            "hard",
            "enabled",
            "config",
            "thresholds",
            "reason",
        ]


class CustomerOverrideView(APIView):
    """Set a customer's own entitlement to a feature (replacing its plan's template)."""

    @extend_schema(request=OverrideSerializer, responses=OverrideSerializer)
    def put(self, request, key: str):
        customer = get_object_or_404(Customer, key=key)
        serializer = OverrideSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if (
            data.get("type", "metered") == "metered"
            and data.get("limit") is not None
            and data["limit"] < 0
        ):
            raise ValidationError({"limit": ["A limit cannot be negative."]})
        override, _ = EntitlementOverride.objects.update_or_create(
            customer=customer,
            feature=data["feature"],
            defaults={k: v for k, v in data.items() if k != "feature"},
        )
        return Response(OverrideSerializer(override).data)


class GrantSerializer(DecimalTextModelSerializer):
    feature = serializers.SlugRelatedField(slug_field="key", queryset=Feature.objects.all())

    class Meta:
        model = Grant
        fields = [
            "id",
            "feature",
            "amount",
            "priority",
            "effective_at",
            "expires_at",
            "rollover",
            "reason",
            "created_at",
            "voided_at",
        ]
        read_only_fields = ["id", "created_at", "voided_at"]

    def validate(self, attrs):
        if attrs["amount"] <= 0:
            raise ValidationError({"amount": ["A grant adds a positive number of units."]})
        if attrs.get("expires_at") and attrs["expires_at"] <= attrs["effective_at"]:
            raise ValidationError({"expires_at": ["A grant must expire after it takes effect."]})
        return attrs


class CustomerGrantsView(APIView):
    """A customer's grants (extra units on top of a metered entitlement)."""

    @extend_schema(responses=GrantSerializer(many=True))
    def get(self, request, key: str):
        account = customer_billing_account(customer=get_object_or_404(Customer, key=key))
        grants = (
            Grant.objects.filter(customer=account).select_related("feature").order_by("-created_at")
        )
        return Response(GrantSerializer(grants, many=True).data)

    @extend_schema(request=GrantSerializer, responses={201: GrantSerializer})
    def post(self, request, key: str):
        account = customer_billing_account(customer=get_object_or_404(Customer, key=key))
        serializer = GrantSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        grant = serializer.save(customer=account)
        return Response(GrantSerializer(grant).data, status=status.HTTP_201_CREATED)


class GrantVoidView(APIView):
    @extend_schema(request=None, responses=GrantSerializer)
    def post(self, request, pk: int):
        grant = grant_void(grant=get_object_or_404(Grant, pk=pk), now=timezone.now())
        return Response(GrantSerializer(grant).data)
