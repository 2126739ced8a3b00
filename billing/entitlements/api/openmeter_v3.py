"""OpenMeter v3's entitlement access query, which Kong's Entitlement Enforcement plugin
polls: `POST /api/v3/openmeter/entitlement-access/query`. Shapes follow OpenMeter's v3
models (`EntitlementAccessQueryRequest`, `EntitlementAccessQueryResponse`), snake_case."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.entitlements.access_query import AccessQueryResult, entitlement_access_query

MAX_ACCESS_QUERY_KEYS = 1000
MAX_KEY_LENGTH = 255


class _Key(serializers.CharField):
    """A key is a JSON string: a number is refused, not read as its digits."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class EntitlementAccessQueryFeatureSerializer(serializers.Serializer):
    keys = serializers.ListField(
        child=_Key(max_length=MAX_KEY_LENGTH),
        min_length=1,
        max_length=MAX_ACCESS_QUERY_KEYS,
    )


class EntitlementAccessQueryCustomerSerializer(EntitlementAccessQueryFeatureSerializer):
    keys = serializers.ListField(
        child=_Key(max_length=MAX_KEY_LENGTH),
        min_length=1,
        max_length=MAX_ACCESS_QUERY_KEYS,
        help_text=f"Customer keys or gateway consumer (subject) keys; at most "
        f"{MAX_ACCESS_QUERY_KEYS}.",
    )


class EntitlementAccessQuerySerializer(serializers.Serializer):
    customer = EntitlementAccessQueryCustomerSerializer()
    feature = EntitlementAccessQueryFeatureSerializer(
        required=False, help_text="The features to answer for; every feature when omitted."
    )
    include_credits = serializers.BooleanField(
        required=False,
        help_text="Accepted for OpenMeter's shape; prepaid credits never cut access.",
    )


class EntitlementFeatureAccessReasonSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=[
            "unknown",
            "usage_limit_reached",
            "feature_unavailable",
            "feature_not_found",
            "no_credit_available",
        ]
    )
    message = serializers.CharField()


class EntitlementFeatureAccessSerializer(serializers.Serializer):
    has_access = serializers.BooleanField()
    reason = EntitlementFeatureAccessReasonSerializer(
        required=False, help_text="Why not, when has_access is false."
    )


class EntitlementAccessQueryResultCustomerSerializer(serializers.Serializer):
    id = serializers.CharField()
    key = serializers.CharField()
    name = serializers.CharField()
    currency = serializers.CharField()
    primary_email = serializers.CharField(required=False)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class EntitlementAccessQueryResultSerializer(serializers.Serializer):
    matched = serializers.ListField(
        child=serializers.CharField(), help_text="The keys asked for that resolved to it."
    )
    customer = EntitlementAccessQueryResultCustomerSerializer()
    features = serializers.DictField(child=EntitlementFeatureAccessSerializer())
    updated_at = serializers.DateTimeField()


class EntitlementAccessQueryErrorSerializer(serializers.Serializer):
    customer = serializers.CharField(help_text="The key asked for.")
    code = serializers.ChoiceField(choices=["unknown", "customer_not_found"])
    message = serializers.CharField()


class EntitlementAccessQueryPageSerializer(serializers.Serializer):
    size = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)


class EntitlementAccessQueryMetaSerializer(serializers.Serializer):
    page = EntitlementAccessQueryPageSerializer()


class EntitlementAccessQueryResponseSerializer(serializers.Serializer):
    data = EntitlementAccessQueryResultSerializer(many=True)
    errors = EntitlementAccessQueryErrorSerializer(many=True)
    meta = EntitlementAccessQueryMetaSerializer()


def _body(result: AccessQueryResult, at) -> dict:
    data = []
    for access in result.customers:
        c = access.customer
        data.append(
            {
                "matched": list(access.matched),
                "customer": {
                    "id": str(c.pk),
                    "key": c.key,
                    "name": c.name,
                    "currency": c.currency,
                    **({"primary_email": c.email} if c.email else {}),
                    "created_at": c.created_at.isoformat(),
                    "updated_at": c.updated_at.isoformat(),
                },
                "features": {
                    key: {
                        "has_access": fa.has_access,
                        **(
                            {"reason": {"code": fa.reason_code, "message": fa.reason_message}}
                            if fa.reason_code
                            else {}
                        ),
                    }
                    for key, fa in access.features.items()
                },
                "updated_at": at.isoformat(),
            }
        )
    return {
        "data": data,
        "errors": [
            {"customer": e.key, "code": e.code, "message": e.message} for e in result.errors
        ],
        # one page: every key asked for is answered (at most MAX_ACCESS_QUERY_KEYS)
        "meta": {"page": {"size": len(data), "next": None, "previous": None}},
    }


class EntitlementAccessQueryView(APIView):
    """Feature access, now, of every customer the keys resolve to (a customer key, else a
    consumer key mapped now); a subsidiary billed to its parent has its billing
    account's entitlements. Access is the value check's `hasAccess`: a metered
    entitlement until a hard limit is used up, a boolean when enabled, a static always; a
    feature without an entitlement has none. Keys that resolve to no customer are listed
    in `errors`. At most 1,000 keys per request."""

    required_scope = "read"

    @extend_schema(
        operation_id="openmeter_v3_entitlement_access_query",
        request=EntitlementAccessQuerySerializer,
        responses={
            200: EntitlementAccessQueryResponseSerializer,
            400: OpenApiResponse(description="Not a customer.keys list of 1 to 1,000 keys."),
        },
        examples=[
            OpenApiExample(
                "Two gateway consumers",
                value={"customer": {"keys": ["acme-gw", "globex"]}},
                request_only=True,
            )
        ],
    )
    def post(self, request):
        if not isinstance(request.data, dict):
            raise ValidationError({"customer": ['Give {"customer": {"keys": [...]}}.']})
        serializer = EntitlementAccessQuerySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        at = timezone.now()
        result = entitlement_access_query(
            keys=data["customer"]["keys"],
            feature_keys=data["feature"]["keys"] if "feature" in data else None,
            at=at,
        )
        return Response(_body(result, at))
