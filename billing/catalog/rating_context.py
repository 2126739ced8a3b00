"""What rating reads besides usage, for many billing accounts at once.

A billing run rates thousands of accounts: ``RatingContext`` loads their trees,
subscriptions, rate cards and tax rates in a handful of queries, and can read the usage
their rating will ask for in one statement per feature and time range.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Prefetch

from billing.catalog.periods import Period
from billing.catalog.prices import price_parse
from billing.catalog.pricing.definitions import FlatPrice
from billing.models import BillingProfile, PlanVersion, RateCard, Subscription
from billing.models import TaxRate as TaxRateRow
from customers.models import Customer
from customers.selectors import billed_customer_ids_many
from metering.models import Aggregation, Feature
from metering.usage import FeatureUsage, Partial, feature_usage, usage_of, usage_partials


@dataclass
class RatingContext:
    """Everything rating reads besides usage, for a set of billing accounts, loaded in a
    handful of queries: a billing run rates thousands of accounts with it instead of
    asking for each account's subscriptions, rate cards, tree and taxes one by one.

    A context is a snapshot: build it inside the transaction (or the run) that uses it.
    """

    billed: dict[int, list[int]]
    subscriptions: dict[int, list[Subscription]]
    cards: dict[int, list[RateCard]]
    profiles: dict[int, BillingProfile]
    version_taxes: dict[int, list[TaxRateRow]]
    # (feature id, start, end) → (the customers read, their partial aggregates)
    usage: dict[tuple, tuple[frozenset, dict[int, Partial]]] = field(default_factory=dict)

    @classmethod
    def load(cls, account_ids: Iterable[int]) -> RatingContext:
        ids = sorted(set(account_ids))
        subscriptions: dict[int, list[Subscription]] = {}
        for sub in (
            Subscription.objects.select_related("plan_version")
            .filter(customer_id__in=ids)
            .order_by("customer_id", "start")
        ):
            subscriptions.setdefault(sub.customer_id, []).append(sub)
        version_ids = {s.plan_version_id for subs in subscriptions.values() for s in subs}
        cards: dict[int, list[RateCard]] = {}
        for card in (
            RateCard.objects.select_related("feature__meter")
            .filter(plan_version_id__in=version_ids)
            .order_by("plan_version_id", "position", "pk")
        ):
            cards.setdefault(card.plan_version_id, []).append(card)
        profiles = {
            p.customer_id: p
            for p in BillingProfile.objects.filter(customer_id__in=ids).prefetch_related(
                Prefetch("tax_rates", queryset=TaxRateRow.objects.order_by("key"))
            )
        }
        version_taxes: dict[int, list[TaxRateRow]] = {v: [] for v in version_ids}
        for row in (
            PlanVersion.tax_rates.through.objects.filter(planversion_id__in=version_ids)
            .select_related("taxrate")
            .order_by("taxrate__key")
        ):
            version_taxes[row.planversion_id].append(row.taxrate)
        return cls(
            billed=billed_customer_ids_many(account_ids=ids),
            subscriptions=subscriptions,
            cards=cards,
            profiles=profiles,
            version_taxes=version_taxes,
        )

    def subscriptions_in(self, account_id: int, period: Period) -> list[Subscription]:
        return [
            s
            for s in self.subscriptions.get(account_id, [])
            if s.start < period.end and (s.end is None or s.end > period.start)
        ]

    def usage_prefetch(self, pairs: Iterable[tuple[Customer, Period]]) -> None:
        """Read, for every (account, period) of ``pairs``, the usage its rating will ask
        for: one statement per feature and time range for all the accounts at once
        (accounts on the same plan and period share them) instead of one per account.

        A unique count of an account with subsidiaries is left to ``feature_usage``:
        distinct values over a group are not a sum of its members' counts.
        """
        wanted: dict[tuple, tuple[Feature, set[int]]] = {}
        for account, period in pairs:
            ids = self.billed[account.pk]
            for sub in self.subscriptions_in(account.pk, period):
                start, end = max(sub.start, period.start), min(sub.end or period.end, period.end)
                for card in self.cards.get(sub.plan_version_id, []):
                    if card.feature_id is None or isinstance(price_parse(card.price), FlatPrice):
                        continue
                    unique = card.feature.meter.aggregation == Aggregation.UNIQUE_COUNT
                    if end <= start or (unique and len(ids) > 1):
                        continue
                    key = (card.feature_id, start, end)
                    wanted.setdefault(key, (card.feature, set()))[1].update(ids)
        for (feature_id, start, end), (feature, ids) in wanted.items():
            partials = usage_partials(
                meter=feature.meter,
                filters=feature.filters or {},
                customer_ids=ids,
                start=start,
                end=end,
            )
            partials.pop(-1, None)  # the distinct count over all of them: meaningless here
            self.usage[(feature_id, start, end)] = (frozenset(ids), partials)

    def feature_usage(
        self, *, feature: Feature, customer_ids: list[int], start: datetime, end: datetime
    ) -> FeatureUsage:
        """``metering.usage.feature_usage``, from what ``usage_prefetch`` read when it
        covers these customers over exactly this range."""
        found = self.usage.get((feature.pk, start, end))
        unique = feature.meter.aggregation == Aggregation.UNIQUE_COUNT
        if (
            found is None
            or not found[0].issuperset(customer_ids)
            or (unique and len(customer_ids) > 1)
        ):
            return feature_usage(feature=feature, customer_ids=customer_ids, start=start, end=end)
        partials = {cid: found[1][cid] for cid in customer_ids if cid in found[1]}
        return usage_of(feature.meter.aggregation, partials)
