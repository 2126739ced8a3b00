"""The upcoming invoice: a billing account's current period, rated with usage so far.

A read, nothing stored, shared by the API and the admin page. The rating itself is
``billing.catalog.rating.current_period_rate``, which the portal and the spend
notifications read too; this module adds the keys and plan versions the pages show.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from billing.catalog.rating import RatedLine, RatedPeriod, current_period_rate
from billing.models import PlanVersion
from customers.models import Customer
from customers.selectors import customer_billing_account
from metering.models import Feature


class NoSubscription(LookupError):
    """The billing account has no subscription at the instant asked about."""

    def __init__(self, *, customer: Customer, account: Customer, at: datetime) -> None:
        self.customer, self.account, self.at = customer, account, at
        via = "" if account.pk == customer.pk else f" (the billing account of {customer.key})"
        super().__init__(
            f"{account.key}{via} has no subscription at {at.isoformat()}, so it has no "
            "upcoming invoice."
        )


@dataclass(frozen=True)
class UpcomingInvoice:
    customer: Customer  # the customer asked about
    account: Customer  # the billing account whose invoice this is
    as_of: datetime  # usage counted up to this instant
    rated: RatedPeriod
    customer_keys: dict[int, str]
    feature_keys: dict[int, str]
    plan_versions: tuple[PlanVersion, ...]

    @property
    def lines_by_customer(self) -> list[tuple[str, list[RatedLine]]]:
        """Lines grouped by the customer they belong to: the account first, then its
        subsidiaries by key; each group keeps the rating order."""
        groups: dict[int, list[RatedLine]] = {}
        for line in self.rated.lines:
            groups.setdefault(line.customer_id, []).append(line)
        order = sorted(
            groups, key=lambda cid: (cid != self.account.pk, self.customer_keys.get(cid, ""))
        )
        return [(self.customer_keys.get(cid, str(cid)), groups[cid]) for cid in order]


def upcoming_invoice(*, customer: Customer, now: datetime) -> UpcomingInvoice:
    """The invoice ``customer``'s billing account would get for the period holding ``now``,
    with usage up to ``now`` (fees are the whole period's).

    Raises ``NoSubscription`` when the account has no subscription at ``now``.
    """
    account = customer_billing_account(customer=customer)
    current = current_period_rate(account=account, now=now)
    if current is None:
        raise NoSubscription(customer=customer, account=account, at=now)
    rated = current.rated
    customer_ids = {line.customer_id for line in rated.lines} | {account.pk, customer.pk}
    feature_ids = {line.feature_id for line in rated.lines if line.feature_id}
    versions = PlanVersion.objects.select_related("plan", "customer").in_bulk(rated.plan_versions)
    return UpcomingInvoice(
        customer=customer,
        account=account,
        as_of=now,
        rated=rated,
        customer_keys=dict(Customer.objects.filter(pk__in=customer_ids).values_list("pk", "key")),
        feature_keys=dict(Feature.objects.filter(pk__in=feature_ids).values_list("pk", "key")),
        plan_versions=tuple(versions[pk] for pk in dict.fromkeys(rated.plan_versions)),
    )
