"""Feature access of many customers at once: OpenMeter v3's entitlement access query,
which Kong's Entitlement Enforcement plugin polls.

Each key asked for is a customer key or, else, a gateway consumer (subject) key mapped
to a customer at ``at``. A subsidiary billed to its parent has its billing account's
entitlements. Access follows the value check (``entitlement_value_from``): boolean is its
``enabled``, static always, metered unless a hard limit is used up.

Written to be polled every few seconds for thousands of keys: a fixed number of queries
resolves every key and every entitlement, and only hard-limited metered entitlements
read usage (one statement each, from the cached context, as the value check does); a
soft or absent limit never cuts access, so its usage is not read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from billing.entitlements.specs import entitlement_specs_many
from billing.entitlements.value import entitlement_context, entitlement_value_from
from customers.models import Customer
from customers.selectors import billing_account_ids, consumers_resolve
from metering.models import Feature

# OpenMeter v3's reason and error codes (EntitlementFeatureAccessCode, its query error Code)
USAGE_LIMIT_REACHED = "usage_limit_reached"
FEATURE_UNAVAILABLE = "feature_unavailable"
FEATURE_NOT_FOUND = "feature_not_found"
CUSTOMER_NOT_FOUND = "customer_not_found"


@dataclass(frozen=True)
class FeatureAccess:
    has_access: bool
    reason_code: str | None = None
    reason_message: str | None = None


@dataclass(frozen=True)
class CustomerAccess:
    matched: tuple[str, ...]  # the keys asked for that resolved to this customer
    customer: Customer
    features: dict[str, FeatureAccess]


@dataclass(frozen=True)
class AccessQueryError:
    key: str
    code: str
    message: str


@dataclass(frozen=True)
class AccessQueryResult:
    customers: list[CustomerAccess]
    errors: list[AccessQueryError]


def _resolve(keys: Sequence[str], at: datetime) -> tuple[dict[str, int], list[str]]:
    """Each key to the id of its customer (a customer key first, else a consumer key
    mapped at ``at``), and the keys that resolve to none. Two queries."""
    resolved = dict(Customer.objects.filter(key__in=list(keys)).values_list("key", "pk"))
    rest = [k for k in keys if k not in resolved]
    for key, customer_id in zip(
        rest, consumers_resolve(pairs=[(k, at) for k in rest]), strict=True
    ):
        if customer_id is not None:
            resolved[key] = customer_id
    return resolved, [k for k in keys if k not in resolved]


def _access(*, account: Customer, feature: Feature, spec, at: datetime) -> FeatureAccess:
    if spec is None:
        return FeatureAccess(False, FEATURE_UNAVAILABLE, "No entitlement to this feature.")
    if spec.type == "boolean":
        if spec.enabled:
            return FeatureAccess(True)
        return FeatureAccess(False, FEATURE_UNAVAILABLE, "The feature is turned off.")
    if spec.type != "metered" or spec.limit is None or not spec.hard:
        return FeatureAccess(True)  # static, unlimited or soft: usage never cuts access
    value = entitlement_value_from(
        context=entitlement_context(customer_key=account.key, feature_key=feature.key), at=at
    )
    if value is None or value.has_access:
        return FeatureAccess(value is not None)
    return FeatureAccess(
        False,
        USAGE_LIMIT_REACHED,
        f"Used {value.usage} of {value.limit + value.granted} this usage period (hard limit).",
    )


def entitlement_access_query(
    *, keys: Sequence[str], feature_keys: Sequence[str] | None, at: datetime
) -> AccessQueryResult:
    """The access to each feature (those of ``feature_keys``, else every feature) of the
    customer each key resolves to at ``at``, one result per customer in the order first
    asked; keys that resolve to no customer are errors, not a failure of the query."""
    keys = list(dict.fromkeys(keys))
    resolved, unknown = _resolve(keys, at)
    customers = Customer.objects.in_bulk(set(resolved.values()))
    accounts_of = billing_account_ids(customer_ids=customers)
    accounts = {**customers}
    missing = set(accounts_of.values()) - set(accounts)
    accounts.update(Customer.objects.in_bulk(missing))
    features = list(
        Feature.objects.select_related("meter").filter(
            **({"key__in": list(feature_keys)} if feature_keys is not None else {})
        )
    )
    specs = entitlement_specs_many(
        account_ids=list(set(accounts_of.values())), features=features, at=at
    )
    by_account: dict[int, dict[str, FeatureAccess]] = {}
    for account_id in set(accounts_of.values()):
        account = accounts[account_id]
        by_account[account_id] = {
            f.key: _access(account=account, feature=f, spec=specs.get((account_id, f.key)), at=at)
            for f in features
        }
    absent = (
        {k: FeatureAccess(False, FEATURE_NOT_FOUND, f"No feature {k!r}.") for k in feature_keys}
        if feature_keys is not None
        else {}
    )
    matched: dict[int, list[str]] = {}
    for key in keys:
        if key in resolved:
            matched.setdefault(resolved[key], []).append(key)
    return AccessQueryResult(
        customers=[
            CustomerAccess(
                matched=tuple(asked),
                customer=customers[customer_id],
                features={**absent, **by_account[accounts_of[customer_id]]},
            )
            for customer_id, asked in matched.items()
        ],
        errors=[
            AccessQueryError(
                key=k,
                code=CUSTOMER_NOT_FOUND,
                message=f"No customer key, and no consumer key mapped now, is {k!r}.",
            )
            for k in unknown
        ],
    )
