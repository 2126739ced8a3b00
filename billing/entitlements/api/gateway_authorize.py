"""``GET /api/v1/gateways/authorize``: forward-auth for API gateways (nginx
``auth_request``, Envoy ``ext_authz``, Traefik ``forwardAuth``), answered ``204`` or a
``403`` problem document saying why."""

from __future__ import annotations

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.entitlements.context import EntitlementNotFound
from billing.entitlements.gateway import GatewayDecision, gateway_authorize
from core.api.errors import problem_response

SUBJECT_HEADER = "X-Billing-Subject"
MAX_SUBJECT = 255


def _decide(*, subject: str, feature_key: str, at, allow_unknown: bool) -> GatewayDecision:
    kwargs = {
        "subject": subject,
        "feature_key": feature_key,
        "at": at,
        "allow_unknown_subject": allow_unknown,
    }
    try:
        return gateway_authorize(**kwargs)
    except (OperationalError, InterfaceError):
        # As the value check does: a kept connection that PostgreSQL closed (a restart)
        # fails on first use; a check only reads, so it is asked again on a new one.
        if connection.in_atomic_block or connection.is_usable():
            raise
        connection.close()
        return gateway_authorize(**kwargs)


class GatewayAuthorizeView(APIView):
    """Whether a gateway subject may use a feature now: `204` yes, `403` (a problem
    document with `reason`: `limit_reached`, `no_entitlement`, `disabled`,
    `unknown_subject`) no. The subject is the `X-Billing-Subject` header, else the
    `subject` query parameter: a consumer key, resolved through the consumer mappings."""

    required_scope = "read"
    problem_statuses = (403, 404)

    @extend_schema(
        operation_id="gateway_authorize",
        parameters=[
            OpenApiParameter(
                "feature", OpenApiTypes.STR, required=True, description="The feature's key."
            ),
            OpenApiParameter(
                "subject",
                OpenApiTypes.STR,
                description=f"The gateway consumer key, when the {SUBJECT_HEADER} header is absent.",
            ),
            OpenApiParameter(
                SUBJECT_HEADER,
                OpenApiTypes.STR,
                location=OpenApiParameter.HEADER,
                description="The gateway consumer key (takes precedence over `subject`).",
            ),
        ],
        responses={
            204: OpenApiResponse(description="Access: let the request through."),
            403: OpenApiResponse(
                description="No access now (problem document; `reason`: `limit_reached`, "
                "`no_entitlement`, `disabled`, `unknown_subject`), or the API key lacks "
                "the read scope."
            ),
            404: OpenApiResponse(description="No feature with this key."),
        },
    )
    def get(self, request):
        feature_key = request.query_params.get("feature", "")
        subject = request.headers.get(SUBJECT_HEADER) or request.query_params.get("subject", "")
        errors = {}
        if not feature_key:
            errors["feature"] = ["Name the feature: ?feature=KEY."]
        if not subject:
            errors["subject"] = [f"Name the subject: the {SUBJECT_HEADER} header or ?subject=."]
        elif len(subject) > MAX_SUBJECT or "\x00" in subject:
            errors["subject"] = [f"A subject is at most {MAX_SUBJECT} characters, without NUL."]
        if errors:
            raise ValidationError(errors)
        allow_unknown = settings.GATEWAY_AUTHORIZE_UNKNOWN_SUBJECT == "allow"
        try:
            decision = _decide(
                subject=subject,
                feature_key=feature_key,
                at=timezone.now(),
                allow_unknown=allow_unknown,
            )
        except EntitlementNotFound as exc:
            raise NotFound(str(exc)) from exc
        if decision.allowed:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return problem_response(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=decision.detail,
            reason=decision.reason,
            subject=decision.subject,
            feature=decision.feature_key,
            customer=decision.customer_key,
        )
