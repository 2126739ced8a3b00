from billing.models.access import CustomerAccess
from billing.models.catalog import (
    BillingProfile,
    Cadence,
    Plan,
    PlanVersion,
    RateCard,
    Subscription,
    TaxRate,
    WebhookEndpoint,
)
from billing.models.credits import CreditGrant, CreditLedgerEntry  # noqa: F401
from billing.models.entitlements import EntitlementOverride, EntitlementType, Grant, UsagePeriod
from billing.models.invoices import (
    CREDIT_NOTE_ORDERING,
    INVOICE_ORDERING,
    CreditNote,
    CreditNoteLine,
    DocumentSequence,
    FrozenInvoiceError,
    Invoice,
    InvoiceEvent,
    InvoiceLine,
    InvoiceStatus,
    InvoiceTax,
    LineKind,
)
from billing.models.notifications import (  # noqa: F401
    NotificationCursor,
    NotificationEvent,
    NotificationRule,
    WebhookAttempt,
    WebhookDelivery,
)

__all__ = [
    "CREDIT_NOTE_ORDERING",
    "INVOICE_ORDERING",
    "BillingProfile",
    "Cadence",
    "CustomerAccess",
    "EntitlementOverride",
    "EntitlementType",
    "Grant",
    "UsagePeriod",
    "CreditNote",
    "CreditNoteLine",
    "DocumentSequence",
    "FrozenInvoiceError",
    "Invoice",
    "InvoiceEvent",
    "InvoiceLine",
    "InvoiceStatus",
    "InvoiceTax",
    "LineKind",
    "Plan",
    "PlanVersion",
    "RateCard",
    "Subscription",
    "TaxRate",
    "WebhookEndpoint",
]
