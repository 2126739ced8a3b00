"""Billing in the admin: the catalog (plans, versions, tax rates, billing profiles,
webhook endpoints), subscriptions and the upcoming invoice. Importing the package
registers every model admin."""

from billing.catalog.admin.plans import (
    BillingProfileAdmin,
    PlanAdmin,
    PlanVersionAdmin,
    TaxRateAdmin,
    WebhookEndpointAdmin,
)
from billing.catalog.admin.subscriptions import SubscriptionAdmin

__all__ = [
    "BillingProfileAdmin",
    "PlanAdmin",
    "PlanVersionAdmin",
    "SubscriptionAdmin",
    "TaxRateAdmin",
    "WebhookEndpointAdmin",
]

import billing.credits.admin  # noqa: E402,F401  credit grants and the ledger
import billing.documents.admin  # noqa: E402,F401  revoking a customer's invoice links
import billing.entitlements.admin  # noqa: E402,F401  overrides, grants, entitlement status
import billing.invoicing.admin  # noqa: E402,F401  invoices and credit notes
import billing.notifications.admin  # noqa: E402,F401  notification rules, webhook deliveries
