"""Billing in the admin: the catalog (plans, versions, tax rates, billing profiles,
webhook endpoints), subscriptions and the upcoming invoice. Importing the package
registers every model admin."""

from billing.admin.catalog import (
    BillingProfileAdmin,
    PlanAdmin,
    PlanVersionAdmin,
    TaxRateAdmin,
    WebhookEndpointAdmin,
)
from billing.admin.subscriptions import SubscriptionAdmin

__all__ = [
    "BillingProfileAdmin",
    "PlanAdmin",
    "PlanVersionAdmin",
    "SubscriptionAdmin",
    "TaxRateAdmin",
    "WebhookEndpointAdmin",
]

import billing.admin_access  # noqa: E402,F401  revoking a customer's invoice links
import billing.admin_entitlements  # noqa: E402,F401  overrides, grants, entitlement status
import billing.admin_invoices  # noqa: E402,F401  invoices and credit notes
import billing.admin_notify  # noqa: E402,F401  credits, notification rules, webhook deliveries
