"""Forward-auth for API gateways: may this gateway subject use this feature now?

A gateway (nginx ``auth_request``, Envoy ``ext_authz``, Traefik ``forwardAuth``) asks
before proxying each request, so this sits on the hot path of every proxied request.
It reads what the entitlement value check reads, through the same cache
(``billing.entitlements.cache``): the subject's consumer mappings (cached under the same
generation, which every change to a mapping or a customer moves; the one valid at ``at``
is picked here), then ``entitlement_value_for_key`` on the mapped customer (a subsidiary
billed to its parent is checked on its billing account). A warm check costs what a warm
value check costs: Redis GETs and the one usage statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from billing.entitlements.cache import context_cached
from billing.entitlements.context import EntitlementNotFound
from billing.entitlements.value import entitlement_value_for_key
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


@dataclass(frozen=True)
class SubjectTerm:
    """The subject belongs to customer ``customer_key`` over ``[valid_from, valid_to)``."""

    customer_key: str
    valid_from: datetime
    valid_to: datetime | None

    def covers(self, at: datetime) -> bool:
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)


# The entitlement cache keys its entries by (customer key, feature key); a subject's
# mappings go under a customer key no customer can clash with (no feature key is empty).
_SUBJECT_PREFIX = "gateway-subject:"


def _subject_terms_build(*, customer_key: str, feature_key: str) -> tuple[SubjectTerm, ...]:
    subject = customer_key.removeprefix(_SUBJECT_PREFIX)
    return tuple(
        SubjectTerm(customer_key=key, valid_from=valid_from, valid_to=valid_to)
        for key, valid_from, valid_to in ConsumerMapping.objects.filter(consumer_key=subject)
        .order_by("valid_from")
        .values_list("customer__key", "valid_from", "valid_to")
    )


def _customer_key_at(*, subject: str, at: datetime) -> str | None:
    # The same rule as ingestion and rollup (``valid_from <= at < valid_to``), applied to
    # the subject's mappings from the cache.
    terms = context_cached(
        customer_key=_SUBJECT_PREFIX + subject, feature_key="", build=_subject_terms_build
    )
    return next((t.customer_key for t in terms if t.covers(at)), None)


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
