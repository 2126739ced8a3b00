"""Forward-auth for API gateways: may this gateway subject use this feature now?

A gateway (nginx ``auth_request``, Envoy ``ext_authz``, Traefik ``forwardAuth``) asks
before proxying each request, so this sits on the hot path of every proxied request.
It reads what the entitlement value check reads, through the same cache: the subject's
consumer mapping at ``at`` (one indexed query), then ``entitlement_value_for_key`` on the
mapped customer (a subsidiary billed to its parent is checked on its billing account).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Q

from billing.entitlements import EntitlementNotFound, entitlement_value_for_key
from customers.models import ConsumerMapping
from metering.models import Feature

# Why access is refused: the ``reason`` of the 403 problem document.
UNKNOWN_SUBJECT = "unknown_subject"
NO_ENTITLEMENT = "no_entitlement"
DISABLED = "disabled"
LIMIT_REACHED = "limit_reached"


@dataclass(frozen=True)
class GatewayDecision:
    """Whether the subject may go through, and, when not, why (``reason``, ``detail``)."""

    allowed: bool
    subject: str
    feature_key: str
    customer_key: str | None = None
    reason: str | None = None
    detail: str = ""
    usage: Decimal | None = None
    limit: Decimal | None = None


def _customer_key_at(*, subject: str, at: datetime) -> str | None:
    # The same rule as ingestion and rollup (``valid_from <= at < valid_to``), reading
    # only the customer's key.
    return (
        ConsumerMapping.objects.filter(consumer_key=subject, valid_from__lte=at)
        .filter(Q(valid_to__isnull=True) | Q(valid_to__gt=at))
        .values_list("customer__key", flat=True)
        .first()
    )


def gateway_authorize(
    *, subject: str, feature_key: str, at: datetime, allow_unknown_subject: bool = False
) -> GatewayDecision:
    """Whether ``subject`` (a gateway consumer key) may use ``feature_key`` at ``at``.

    Allowed when the customer the subject is mapped to at ``at`` has access to the
    feature then (``hasAccess`` of the value check: a metered entitlement past its hard
    limit, a disabled boolean one, or none at all is refused). A subject mapped to no
    customer is refused, unless ``allow_unknown_subject``.

    Raises ``EntitlementNotFound`` for a feature key that does not exist.
    """
    customer_key = _customer_key_at(subject=subject, at=at)
    if customer_key is None:
        # still tell an unknown feature apart: that is the gateway's configuration
        entitlement_feature_exists(feature_key=feature_key)
        if allow_unknown_subject:
            return GatewayDecision(allowed=True, subject=subject, feature_key=feature_key)
        return GatewayDecision(
            allowed=False,
            subject=subject,
            feature_key=feature_key,
            reason=UNKNOWN_SUBJECT,
            detail=f"The subject {subject!r} is mapped to no customer.",
        )
    value = entitlement_value_for_key(customer_key=customer_key, feature_key=feature_key, at=at)
    base = {"subject": subject, "feature_key": feature_key, "customer_key": customer_key}
    if value is None:
        return GatewayDecision(
            allowed=False,
            reason=NO_ENTITLEMENT,
            detail=f"Customer {customer_key!r} has no entitlement to {feature_key!r}.",
            **base,
        )
    if value.has_access:
        return GatewayDecision(allowed=True, usage=value.usage, limit=value.limit, **base)
    if value.type == "metered":
        return GatewayDecision(
            allowed=False,
            reason=LIMIT_REACHED,
            detail=(
                f"Customer {customer_key!r} has used {value.usage} of {feature_key!r}, "
                f"its hard limit is {value.limit + value.granted}."
            ),
            usage=value.usage,
            limit=value.limit,
            **base,
        )
    return GatewayDecision(
        allowed=False,
        reason=DISABLED,
        detail=f"{feature_key!r} is disabled for customer {customer_key!r}.",
        **base,
    )


def entitlement_feature_exists(*, feature_key: str) -> None:
    """Raises ``EntitlementNotFound`` unless a feature has ``feature_key``."""
    if not Feature.objects.filter(key=feature_key).exists():
        raise EntitlementNotFound("feature", feature_key)
