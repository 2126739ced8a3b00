"""What a customer is entitled to: an entitlement's terms (``EntitlementSpec``), read from
a plan version's template or a customer's override, and the reads that list them.

An override replaces the plan's template for its feature; nothing here reads usage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from billing.models import EntitlementOverride, Subscription
from customers.models import Customer
from metering.models import Feature


@dataclass(frozen=True)
class EntitlementSpec:
    feature_key: str
    type: str
    limit: Decimal | None = None
    period: str = "monthly"
    hard: bool = False
    enabled: bool = True
    config: dict = field(default_factory=dict)
    thresholds: tuple = ()
    source: str = "plan"


def spec_from_template(template: dict) -> EntitlementSpec:
    """The terms of a plan version's entitlement template (its stored JSON)."""
    limit = template.get("limit")
    return EntitlementSpec(
        feature_key=template["feature"],
        type=template.get("type", "metered"),
        limit=None if limit is None else Decimal(str(limit)),
        period=template.get("period", "monthly"),
        hard=bool(template.get("hard", False)),
        enabled=bool(template.get("enabled", True)),
        config=template.get("config") or {},
        thresholds=tuple(template.get("thresholds") or ()),
        source="plan",
    )


def spec_from_override(override: EntitlementOverride, feature_key: str) -> EntitlementSpec:
    """The terms of a customer's override, which replace its plan's for the feature."""
    return EntitlementSpec(
        feature_key=feature_key,
        type=override.type,
        limit=override.limit,
        period=override.period,
        hard=override.hard,
        enabled=override.enabled,
        config=override.config,
        thresholds=tuple(override.thresholds or ()),
        source="override",
    )


def entitlements_of(*, account: Customer, at: datetime) -> list[tuple[Feature, EntitlementSpec]]:
    """Every entitlement the account has at ``at`` (templates and overrides), by feature key."""
    specs: dict[str, EntitlementSpec] = {}
    sub = (
        Subscription.objects.select_related("plan_version")
        .filter(customer=account, start__lte=at)
        .exclude(end__lte=at)
        .order_by("start")
        .first()
    )
    for template in (sub.plan_version.entitlements or []) if sub else []:
        specs.setdefault(template["feature"], spec_from_template(template))
    features = {
        f.key: f for f in Feature.objects.select_related("meter").filter(key__in=list(specs))
    }
    for override in EntitlementOverride.objects.filter(customer=account).select_related(
        "feature__meter"
    ):
        features[override.feature.key] = override.feature
        specs[override.feature.key] = spec_from_override(override, override.feature.key)
    return [(features[key], spec) for key, spec in sorted(specs.items()) if key in features]


def entitlement_specs_many(
    *, account_ids: Sequence[int], features: Sequence[Feature], at: datetime
) -> dict[tuple[int, str], EntitlementSpec]:
    """The entitlement of each account to each feature at ``at`` (its override, else the
    template of its subscription covering ``at``), keyed by ``(account id, feature key)``;
    pairs without one are absent. Two queries whatever the number of accounts: the rule
    of ``billing.entitlements.value._spec_at``, for the bulk access query."""
    keys = {f.key for f in features}
    specs: dict[tuple[int, str], EntitlementSpec] = {}
    if not account_ids or not keys:
        return specs
    termed: set[int] = set()
    for sub in (
        Subscription.objects.select_related("plan_version")
        .filter(customer_id__in=list(account_ids), start__lte=at)
        .exclude(end__lte=at)
        .only("customer_id", "start", "plan_version__entitlements")
        .order_by("start")
    ):
        if sub.customer_id in termed:  # the first covering subscription is the term
            continue
        termed.add(sub.customer_id)
        for template in sub.plan_version.entitlements or []:
            if template.get("feature") in keys:
                specs[(sub.customer_id, template["feature"])] = spec_from_template(template)
    for override in EntitlementOverride.objects.filter(
        customer_id__in=list(account_ids), feature__key__in=keys
    ).select_related("feature"):
        specs[(override.customer_id, override.feature.key)] = spec_from_override(
            override, override.feature.key
        )
    return specs
